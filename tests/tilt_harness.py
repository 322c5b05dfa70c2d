"""Evaluate a Tiltfile without Tilt: a real Starlark interpreter (starlark-pyo3) with Tilt's builtins
recorded under Tilt's own names and parameter lists.

The signatures follow Tilt's API reference (tilt-dev/tilt.build `api/`, generated from Tilt's
internal/tiltfile/api). Each builtin is a Python function with exactly Tilt's parameters, so an
unknown keyword fails here as it fails in Tilt. What Tilt does after loading the Tiltfile is
imitated only as far as the graph needs: workloads become resources named after them, Services
join the workload their selector matches, leftovers go to `uncategorized`, `k8s_resource` renames,
configures and creates resources, and references to unknown resources or images are errors.

`local()` really runs its command (so `dbctl render` produces the real YAML). What it returns is
an opaque Blob: like in Tilt it can be passed to k8s_yaml/decode_yaml_stream, and a plain string
passed to k8s_yaml is read as a path, as Tilt does. (`str(blob)` is not supported here.)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import starlark as sl
import yaml

TRIGGER_MODE_AUTO = 0
TRIGGER_MODE_MANUAL = 1
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod",
                  "ReplicationController"}
LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")


class TiltfileError(Exception):
    """The Tiltfile would not load in Tilt."""


class Blob:
    def __init__(self, text: str):
        self.text = text


@dataclass
class Opaque:
    """PortForward, Link, Probe and friends: values the Tiltfile only passes along."""
    kind: str
    fields: dict


@dataclass
class Resource:
    name: str
    type: str  # "k8s" or "local"
    objects: list[str] = field(default_factory=list)  # "name:kind" of every k8s object in it
    workload: str | None = None
    resource_deps: list[str] = field(default_factory=list)
    trigger_mode: int = TRIGGER_MODE_AUTO
    auto_init: bool = True
    labels: list[str] = field(default_factory=list)
    port_forwards: list = field(default_factory=list)
    links: list = field(default_factory=list)
    pod_readiness: str = ""
    images: list[str] = field(default_factory=list)
    cmd: list[str] | str | None = None
    serve_cmd: list[str] | str | None = None
    deps: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    serve_env: dict = field(default_factory=dict)
    dir: str = ""
    serve_dir: str = ""
    readiness_probe: Opaque | None = None
    allow_parallel: bool = False

    @property
    def manual(self) -> bool:
        return self.trigger_mode == TRIGGER_MODE_MANUAL


@dataclass
class Result:
    resources: dict[str, Resource]
    entities: list[dict]
    images: list[dict]
    buttons: dict[str, dict]
    cmds: dict[str, dict]
    warnings: list[str]
    prints: list[str]
    watched: list[str]
    local_calls: list[dict]
    config: dict

    def objects_of(self, kind: str) -> list[dict]:
        return [e for e in self.entities if e.get("kind") == kind]

    def resource_of(self, object_id: str) -> str | None:
        for r in self.resources.values():
            if object_id in r.objects:
                return r.name
        return None


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class Tilt:
    """One evaluation: the builtins, the state they record, and the final assembly."""

    def __init__(self, main: Path, args: list[str], subcommand: str, env: dict | None, run_local: bool):
        self.main = main.resolve()
        self.args = list(args)
        self.subcommand = subcommand
        self.environ = dict(os.environ if env is None else env)
        self.run_local = run_local
        self.dir_stack: list[Path] = [self.main.parent]
        self.loaded: dict[Path, sl.FrozenModule] = {}
        self.entities: list[dict] = []
        self.k8s_calls: list[dict] = []
        self.locals: dict[str, Resource] = {}
        self.images: list[dict] = []
        self.buttons: dict[str, dict] = {}
        self.cmds: dict[str, dict] = {}
        self.warnings: list[str] = []
        self.prints: list[str] = []
        self.watched: list[str] = []
        self.local_calls: list[dict] = []
        self.config_defs: dict[str, dict] = {}
        self.parsed: dict | None = None

    # ------------------------------------------------------------------ helpers
    @property
    def cwd(self) -> Path:
        return self.dir_stack[-1]

    def path(self, p: str) -> Path:
        return (self.cwd / p).resolve() if not os.path.isabs(p) else Path(p)

    def fail(self, message: str):
        raise TiltfileError(message)

    # ------------------------------------------------------------------ builtins (Tilt's signatures)
    def builtins(self) -> dict:
        t = self

        def local(command, quiet=False, command_bat="", echo_off=False, env={}, dir="", stdin=None):
            cwd = t.path(dir) if dir else t.cwd
            call = {"command": command, "env": dict(env), "dir": str(cwd), "quiet": quiet, "echo_off": echo_off}
            t.local_calls.append(call)
            if not t.run_local:
                return _wrap(Blob(""))
            argv = ["sh", "-c", command] if isinstance(command, str) else [str(a) for a in command]
            data = stdin.text if isinstance(stdin, Blob) else stdin
            proc = subprocess.run(argv, cwd=cwd, env={**t.environ, **env}, capture_output=True, text=True,
                                  input=data)
            if proc.returncode != 0:
                shown = command if isinstance(command, str) else shlex.join(argv)
                t.fail(f"command {shown!r} failed.\nerror: exit status {proc.returncode}\n"
                       f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
            return _wrap(Blob(proc.stdout))

        def read_file(file_path, default=None):
            p = t.path(file_path)
            t.watched.append(str(p))
            if not p.exists() and default is not None:
                return _wrap(Blob(default))
            return _wrap(Blob(p.read_text()))

        def watch_file(file_path):
            t.watched.append(str(t.path(file_path)))

        def listdir(directory, recursive=False):
            base = t.path(directory)
            t.watched.append(str(base))
            walker = base.rglob("*") if recursive else base.iterdir()
            return sorted(str(p) for p in walker if p.is_file())

        def blob(contents):
            return _wrap(Blob(contents))

        def decode_yaml_stream(yaml_):
            return [d for d in yaml.safe_load_all(_text(yaml_)) if d is not None]

        def decode_yaml(yaml_):
            return yaml.safe_load(_text(yaml_))

        def encode_yaml(obj):
            return _wrap(Blob(yaml.safe_dump(obj, sort_keys=False)))

        def k8s_yaml(yaml_, allow_duplicates=False):
            texts = []
            for item in _as_list(yaml_):
                if isinstance(item, Blob):
                    texts.append(item.text)
                elif isinstance(item, str):  # a path, as in Tilt
                    p = t.path(item)
                    if not p.exists():
                        t.fail(f"k8s_yaml: file not found: {p}")
                    t.watched.append(str(p))
                    texts.append(p.read_text())
                else:
                    t.fail(f"k8s_yaml: for parameter \"yaml\": Value should be a string, list or Blob; got {item!r}")
            for text in texts:
                for doc in yaml.safe_load_all(text):
                    if not doc:
                        continue
                    ident = _object_id(doc)
                    if not allow_duplicates and any(_object_id(e) == ident for e in t.entities):
                        t.fail(f"Duplicate YAML: {ident}")
                    t.entities.append(doc)

        def k8s_resource(workload="", new_name="", port_forwards=[], extra_pod_selectors=[],
                         trigger_mode=TRIGGER_MODE_AUTO, resource_deps=[], objects=[], auto_init=True,
                         pod_readiness="", links=[], labels=[], discovery_strategy=""):
            if not workload and not (objects and new_name):
                t.fail("k8s_resource: must specify either `workload` or both `objects` and `new_name`")
            if pod_readiness not in ("", "ignore", "wait"):
                t.fail(f"k8s_resource: pod_readiness must be 'ignore' or 'wait', got {pod_readiness!r}")
            _check_labels("k8s_resource", labels, t)
            _check_trigger_mode("k8s_resource", trigger_mode, t)
            t.k8s_calls.append(dict(workload=workload, new_name=new_name,
                                    port_forwards=[_port_forward(p) for p in _as_list(port_forwards)],
                                    trigger_mode=trigger_mode, resource_deps=list(resource_deps),
                                    objects=list(objects), auto_init=auto_init, pod_readiness=pod_readiness,
                                    links=_as_list(links), labels=_as_list(labels)))

        def local_resource(name, cmd, deps=None, trigger_mode=TRIGGER_MODE_AUTO, resource_deps=[], ignore=[],
                           auto_init=True, serve_cmd="", cmd_bat="", serve_cmd_bat="", allow_parallel=False,
                           links=[], tags=[], env={}, serve_env={}, readiness_probe=None, dir="",
                           serve_dir="", labels=[]):
            if name in t.locals:
                t.fail(f"local_resource named {name!r} already exists")
            _check_labels("local_resource", labels, t)
            _check_trigger_mode("local_resource", trigger_mode, t)
            if readiness_probe is not None and not (isinstance(readiness_probe, Opaque)
                                                    and readiness_probe.kind == "Probe"):
                t.fail("local_resource: readiness_probe must be a probe()")
            if readiness_probe is not None and not serve_cmd:
                t.fail(f"Ignoring readiness probe for local resource {name!r} (no serve_cmd was defined)")
            t.locals[name] = Resource(
                name=name, type="local", cmd=cmd or None, serve_cmd=serve_cmd or None,
                deps=[str(t.path(d)) for d in _as_list(deps)], ignore=_as_list(ignore),
                trigger_mode=trigger_mode, resource_deps=list(resource_deps), auto_init=auto_init,
                labels=_as_list(labels), links=_as_list(links), env=dict(env), serve_env=dict(serve_env),
                dir=str(t.path(dir)) if dir else str(t.cwd), serve_dir=str(t.path(serve_dir)) if serve_dir else str(t.cwd),
                readiness_probe=readiness_probe, allow_parallel=allow_parallel)

        def docker_build(ref, context, build_args={}, dockerfile="Dockerfile", dockerfile_contents="",
                         live_update=[], match_in_env_vars=False, ignore=[], only=[], entrypoint=[], target="",
                         ssh="", network="", secret="", extra_tag="", container_args=None, cache_from=[],
                         pull=False, platform=""):
            ctx = t.path(context)
            if not ctx.is_dir():
                t.fail(f"docker_build: context {ctx} does not exist")
            df = t.path(dockerfile)
            if dockerfile_contents and dockerfile != "Dockerfile":
                t.fail("Cannot specify both dockerfile and dockerfile_contents keyword arguments")
            if not dockerfile_contents and not df.exists():
                t.fail(f"error reading dockerfile: open {df}: no such file or directory")
            for path in _as_list(only):
                if any(ch in path for ch in "*?["):
                    t.fail(f"docker_build: `only` takes real paths, not globs: {path!r}")
            if any(i["ref"] == ref for i in t.images):
                t.fail(f"Image for ref {ref!r} has already been defined")
            t.images.append(dict(ref=ref, context=str(ctx), dockerfile=str(df), only=_as_list(only),
                                 ignore=_as_list(ignore), build_args=dict(build_args), target=target))

        def port_forward(local_port, container_port=None, name=None, link_path=None, host=None):
            return _wrap(Opaque("PortForward", dict(local_port=local_port, container_port=container_port, name=name,
                                                    link_path=link_path, host=host)))

        def link(url, name=None):
            return _wrap(Opaque("Link", dict(url=url, name=name)))

        def probe(initial_delay_secs=0, timeout_secs=1, period_secs=10, success_threshold=1,
                  failure_threshold=3, exec=None, http_get=None, tcp_socket=None):
            if sum(x is not None for x in (exec, http_get, tcp_socket)) != 1:
                t.fail("probe: exactly one of exec, http_get, or tcp_socket must be specified")
            return _wrap(Opaque("Probe", dict(initial_delay_secs=initial_delay_secs, timeout_secs=timeout_secs,
                                              period_secs=period_secs, exec=exec, http_get=http_get,
                                              tcp_socket=tcp_socket)))

        def exec_action(command):
            return _wrap(Opaque("ExecAction", dict(command=list(command))))

        def http_get_action(port, host="localhost", scheme="http", path=""):
            return _wrap(Opaque("HTTPGetAction", dict(port=port, host=host, scheme=scheme, path=path)))

        def tcp_socket_action(port, host="localhost"):
            return _wrap(Opaque("TCPSocketAction", dict(port=port, host=host)))

        def k8s_context():
            return t.environ.get("TILT_HARNESS_K8S_CONTEXT", "kind-kind")

        def k8s_namespace():
            return "default"

        def allow_k8s_contexts(contexts):
            pass

        def update_settings(max_parallel_updates=3, k8s_upsert_timeout_secs=30, suppress_unused_image_warnings=None):
            if max_parallel_updates < 1:
                t.fail("max_parallel_updates must be >= 1")

        def version_settings(check_updates=True, constraint=""):
            pass

        def secret_settings(disable_scrub=False):
            pass

        def warn(msg):
            t.warnings.append(msg)

        def exit(code):
            raise _Exit(str(code))

        def load_dynamic(path):
            t.fail("load_dynamic is not supported by this harness")

        def include(path):
            t.fail("include is not supported by this harness; use load()")

        # -- modules: os, os.path, config, v1alpha1 (attached as structs by the prelude)
        def os_getcwd():
            return str(t.cwd)

        def os_getenv(key, default=None):
            return t.environ.get(key, default)

        def os_putenv(key, value):
            t.environ[key] = value

        def os_unsetenv(key):
            t.environ.pop(key, None)

        def os_path_abspath(path):
            return str(t.path(path))

        def os_path_relpath(targpath, basepath=""):
            return os.path.relpath(t.path(targpath), t.path(basepath) if basepath else t.cwd)

        def os_path_basename(path):
            return os.path.basename(path)

        def os_path_dirname(path):
            return os.path.dirname(path)

        def os_path_exists(path):
            return t.path(path).exists()

        def os_path_join(path, *paths):
            return os.path.join(path, *paths)

        def os_path_realpath(path):
            return os.path.realpath(t.path(path))

        def config_define(kind):
            def define(name, args=False, usage=""):
                if t.parsed is not None:
                    t.fail(f"config.define_{kind}: cannot define settings after config.parse()")
                if name in t.config_defs:
                    t.fail(f"{name} defined multiple times")
                t.config_defs[name] = dict(kind=kind, args=args, usage=usage)
            return define

        def config_parse():
            t.parsed = _parse_config(t.args, t.config_defs, t)
            return dict(t.parsed)

        def config_set_enabled_resources(resources):
            pass

        def config_clear_enabled_resources():
            pass

        def ui_button(name, labels=None, annotations=None, location=None, text="", icon_name="", icon_svg="",
                      disabled=False, requires_confirmation=False, show_inputs_as_modal=False, inputs=None):
            if name in t.buttons:
                t.fail(f"UIButton {name!r} already defined")
            loc = _struct_arg("location", location, ("component_id", "component_type"), t)
            t.buttons[name] = dict(name=name, labels=labels or {}, annotations=annotations or {}, location=loc,
                                   text=text, icon_name=icon_name, disabled=disabled,
                                   requires_confirmation=requires_confirmation, inputs=[
                                       _struct_arg("inputs", i, ("name", "label", "text", "bool", "hidden"), t)
                                       for i in (inputs or [])])

        def cmd(name, labels=None, annotations=None, args=None, dir="", env=None, readiness_probe=None,
                restart_on=None, start_on=None, disable_source=None):
            if name in t.cmds:
                t.fail(f"Cmd {name!r} already defined")
            if not args:
                t.fail("v1alpha1.cmd: args must have length at least 1")
            t.cmds[name] = dict(name=name, annotations=annotations or {}, args=[str(a) for a in args],
                                dir=str(t.path(dir)) if dir else str(t.cwd), env=list(env or []),
                                start_on=_struct_arg("start_on", start_on, ("ui_buttons", "start_after"), t),
                                restart_on=_struct_arg("restart_on", restart_on, ("file_watches", "ui_buttons"), t))

        def ui_component_location(component_id="", component_type=""):
            return dict(component_id=component_id, component_type=component_type)

        def ui_input_spec(name="", label="", text=None, bool=None, hidden=None):
            return dict(name=name, label=label, text=text, bool=bool, hidden=hidden)

        def ui_bool_input_spec(default_value=False, true_string=None, false_string=None):
            return dict(default_value=default_value, true_string=true_string, false_string=false_string)

        def ui_text_input_spec(default_value="", placeholder=""):
            return dict(default_value=default_value, placeholder=placeholder)

        def start_on_spec(ui_buttons=None):
            return dict(ui_buttons=list(ui_buttons or []))

        def restart_on_spec(file_watches=None, ui_buttons=None):
            return dict(file_watches=list(file_watches or []), ui_buttons=list(ui_buttons or []))

        return {k: v for k, v in locals().items() if callable(v) and k not in ("t", "self", "config_define")} | {
            "config_define_bool": config_define("bool"),
            "config_define_string": config_define("string"),
            "config_define_string_list": config_define("string_list"),
        }

    # ------------------------------------------------------------------ evaluation
    PRELUDE = """
os = struct(
    name = "posix", environ = _environ, getcwd = _m_os_getcwd, getenv = _m_os_getenv, putenv = _m_os_putenv,
    unsetenv = _m_os_unsetenv,
    path = struct(abspath = _m_os_path_abspath, relpath = _m_os_path_relpath, basename = _m_os_path_basename,
                  dirname = _m_os_path_dirname, exists = _m_os_path_exists, join = _m_os_path_join,
                  realpath = _m_os_path_realpath),
)
config = struct(
    define_bool = _m_config_define_bool, define_string = _m_config_define_string,
    define_string_list = _m_config_define_string_list, parse = _m_config_parse,
    set_enabled_resources = _m_config_set_enabled_resources,
    clear_enabled_resources = _m_config_clear_enabled_resources,
    tilt_subcommand = _subcommand, main_path = _main_path, main_dir = _main_dir,
)
v1alpha1 = struct(
    ui_button = _m_ui_button, cmd = _m_cmd, ui_component_location = _m_ui_component_location,
    ui_input_spec = _m_ui_input_spec, ui_bool_input_spec = _m_ui_bool_input_spec,
    ui_text_input_spec = _m_ui_text_input_spec, start_on_spec = _m_start_on_spec, restart_on_spec = _m_restart_on_spec,
)
"""
    # Members of Tilt's modules (os, config, v1alpha1) are reachable only through the structs above.
    MODULE_MEMBERS = ("os_", "config_", "ui_", "cmd", "start_on_spec", "restart_on_spec")

    def _module(self) -> sl.Module:
        m = sl.Module()
        for name, fn in self.builtins().items():
            m.add_callable("_m_" + name if name.startswith(self.MODULE_MEMBERS) else name, fn)
        m["TRIGGER_MODE_AUTO"] = TRIGGER_MODE_AUTO
        m["TRIGGER_MODE_MANUAL"] = TRIGGER_MODE_MANUAL
        m["_environ"] = dict(self.environ)
        m["_subcommand"] = self.subcommand
        m["_main_path"] = str(self.main)
        m["_main_dir"] = str(self.main.parent)
        sl.eval(m, sl.parse("<tilt builtins>", self.PRELUDE, _dialect()), _globals())
        return m

    def _eval_file(self, path: Path) -> sl.Module:
        m = self._module()
        ast = sl.parse(str(path), path.read_text(), _dialect())
        self.dir_stack.append(path.parent)
        try:
            sl.eval(m, ast, _globals(), sl.FileLoader(self._load))
        finally:
            self.dir_stack.pop()
        return m

    def _load(self, module_id: str) -> sl.FrozenModule:
        if module_id.startswith("ext://"):
            self.fail(f"cannot load {module_id}: ext:// extensions are downloaded from the network")
        path = self.path(module_id)
        if path not in self.loaded:
            if not path.exists():
                self.fail(f"cannot load {module_id}: {path} does not exist")
            self.loaded[path] = self._eval_file(path).freeze()
        return self.loaded[path]

    def run(self) -> Result:
        try:
            self._eval_file(self.main)
        except _Exit:
            pass
        except sl.StarlarkError as exc:
            raise TiltfileError(str(exc)) from None
        resources = self._assemble()
        return Result(resources=resources, entities=self.entities, images=self.images, buttons=self.buttons,
                      cmds=self.cmds, warnings=self.warnings, prints=self.prints, watched=self.watched,
                      local_calls=self.local_calls, config=self.parsed or {})

    # ------------------------------------------------------------------ what Tilt does after loading
    def _assemble(self) -> dict[str, Resource]:
        workloads = [e for e in self.entities if e.get("kind") in WORKLOAD_KINDS]
        names = [e["metadata"]["name"] for e in workloads]
        resources: dict[str, Resource] = {}
        for w in workloads:
            name = w["metadata"]["name"]
            rname = name if names.count(name) == 1 else f"{name}:{w['kind'].lower()}"
            resources[rname] = Resource(name=rname, type="k8s", objects=[_object_id(w)], workload=rname)
        assigned = {oid for r in resources.values() for oid in r.objects}

        for call in self.k8s_calls:  # new resources from objects
            if call["workload"]:
                continue
            if call["new_name"] in resources:
                self.fail(f"k8s_resource: a resource named {call['new_name']!r} already exists")
            objs = [self._select(sel, assigned) for sel in call["objects"]]
            resources[call["new_name"]] = Resource(name=call["new_name"], type="k8s", objects=objs)
            assigned.update(objs)

        for e in self.entities:  # Services (and the like) join the workload whose pods they select
            oid = _object_id(e)
            if oid in assigned or e.get("kind") != "Service":
                continue
            selector = (e.get("spec") or {}).get("selector") or {}
            for w in workloads:
                labels = _pod_labels(w)
                if selector and all(labels.get(k) == v for k, v in selector.items()):
                    owner = next(r for r in resources.values() if _object_id(w) in r.objects)
                    owner.objects.append(oid)
                    assigned.add(oid)
                    break
        leftovers = [_object_id(e) for e in self.entities if _object_id(e) not in assigned]
        if leftovers:
            resources["uncategorized"] = Resource(name="uncategorized", type="k8s", objects=leftovers)

        for call in self.k8s_calls:  # configure (and rename)
            name = call["workload"] or call["new_name"]
            if name not in resources:
                self.fail(f"k8s_resource: No Kubernetes resource found with name {name!r}; "
                          f"known: {sorted(resources)}")
            r = resources[name]
            if call["workload"]:
                for sel in call["objects"]:
                    oid = self._select(sel, assigned)
                    r.objects.append(oid)
                    assigned.add(oid)
                    if "uncategorized" in resources and oid in resources["uncategorized"].objects:
                        resources["uncategorized"].objects.remove(oid)
            if call["workload"] and call["new_name"]:
                del resources[name]
                r.name = call["new_name"]
                resources[r.name] = r
            r.port_forwards += call["port_forwards"]
            r.trigger_mode = call["trigger_mode"]
            r.resource_deps = call["resource_deps"]
            r.auto_init = call["auto_init"]
            r.pod_readiness = call["pod_readiness"]
            r.links += call["links"]
            r.labels += call["labels"]
        if "uncategorized" in resources and not resources["uncategorized"].objects:
            del resources["uncategorized"]

        for name, r in self.locals.items():
            if name in resources:
                self.fail(f"local_resource named {name!r} conflicts with a Kubernetes resource")
            resources[name] = r

        used = set()
        for r in resources.values():
            for oid in r.objects:
                e = self._entity(oid)
                for image in _images(e):
                    for b in self.images:
                        if _image_matches(b["ref"], image) and b["ref"] not in r.images:
                            r.images.append(b["ref"])
                            used.add(b["ref"])
        for b in self.images:
            if b["ref"] not in used:
                self.warnings.append(f"Image not used in any deploy config: {b['ref']}")
        for r in resources.values():
            for dep in r.resource_deps:
                if dep not in resources:
                    self.fail(f"resource {r.name!r} specified a dependency on unknown resource {dep!r}")
        for b in self.buttons.values():
            loc = b["location"] or {}
            if loc.get("component_type", "").lower() == "resource" and loc.get("component_id") not in resources:
                self.warnings.append(f"button {b['name']!r} is attached to unknown resource {loc.get('component_id')!r}")
        return resources

    def _select(self, selector: str, assigned: set) -> str:
        parts = selector.split(":")
        matches = [e for e in self.entities
                   if re.fullmatch(parts[0], e["metadata"]["name"], re.I)
                   and (len(parts) < 2 or re.fullmatch(parts[1], e["kind"], re.I))
                   and (len(parts) < 3 or re.fullmatch(parts[2], e["metadata"].get("namespace", "default"), re.I))]
        if len(matches) != 1:
            self.fail(f"k8s_resource: object selector {selector!r} matches {len(matches)} objects; it must match one")
        oid = _object_id(matches[0])
        if oid in assigned:
            self.fail(f"k8s_resource: object {selector!r} is already part of a resource")
        return oid

    def _entity(self, oid: str) -> dict:
        return next(e for e in self.entities if _object_id(e) == oid)


class _Exit(Exception):
    pass


def _wrap(value):
    """Values Starlark code may hold and pass back, but not look into (as in Tilt)."""
    return sl.OpaquePythonObject(value)


def _text(value) -> str:
    return value.text if isinstance(value, Blob) else str(value)


def _object_id(doc: dict) -> str:
    return f"{doc['metadata']['name']}:{doc['kind'].lower()}"


def _pod_template(doc: dict) -> dict:
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        return doc
    if doc["kind"] == "CronJob":
        return spec.get("jobTemplate", {}).get("spec", {}).get("template", {})
    return spec.get("template", {})


def _pod_labels(doc: dict) -> dict:
    return (_pod_template(doc).get("metadata") or {}).get("labels") or {}


def _images(doc: dict) -> list[str]:
    pod = _pod_template(doc).get("spec") or {} if doc.get("kind") in WORKLOAD_KINDS else {}
    return [c.get("image", "") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]


def _image_matches(ref: str, image: str) -> bool:
    """A tagged ref must match exactly; an untagged one matches the image's name with any tag."""
    if ref == image:
        return True
    if ":" in ref.rsplit("/", 1)[-1]:
        return False
    name = image.split("@")[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name == ref


def _port_forward(value):
    if isinstance(value, Opaque) and value.kind == "PortForward":
        return value.fields
    if isinstance(value, int):
        return dict(local_port=value, container_port=None, name=None, link_path=None, host=None)
    if isinstance(value, str):
        parts = value.split(":")
        if not all(p.isdigit() for p in parts[-2:]):
            raise TiltfileError(f"port_forwards: cannot parse {value!r}")
        if len(parts) == 1:
            return dict(local_port=int(parts[0]), container_port=None, name=None, link_path=None, host=None)
        return dict(local_port=int(parts[-2]), container_port=int(parts[-1]), name=None, link_path=None,
                    host=parts[0] if len(parts) == 3 else None)
    raise TiltfileError(f"port_forwards: expected an int, a string or a port_forward(), got {value!r}")


def _check_labels(fn: str, labels, t: Tilt) -> None:
    for label in _as_list(labels):
        if not isinstance(label, str) or not LABEL_RE.match(label):
            t.fail(f"{fn}: invalid label {label!r}: alphanumeric at both ends, '-', '_', '.' inside, 63 chars max")


def _check_trigger_mode(fn: str, mode, t: Tilt) -> None:
    if mode not in (TRIGGER_MODE_AUTO, TRIGGER_MODE_MANUAL):
        t.fail(f"{fn}: trigger_mode must be TRIGGER_MODE_AUTO or TRIGGER_MODE_MANUAL, got {mode!r}")


def _struct_arg(param: str, value, allowed: tuple, t: Tilt):
    """Tilt's v1alpha1 builtins take dicts for nested specs and reject unknown fields."""
    if value is None:
        return None
    if not isinstance(value, dict):
        t.fail(f"{param}: expected a dict, got {type(value).__name__}")
    unknown = set(value) - set(allowed)
    if unknown:
        t.fail(f"{param}: unexpected field(s) {sorted(unknown)}; expected {list(allowed)}")
    return dict(value)


def _parse_config(args: list[str], defs: dict, t: Tilt) -> dict:
    """Tilt's config.parse(): `--name value`, `--name=value`, a bare `--flag` for bools; unknown names fail."""
    result: dict = {}
    positional = [n for n, d in defs.items() if d["args"]]
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            if not positional:
                t.fail("positional args were specified, but none were expected (no setting defined with args=True)")
            d = defs[positional[0]]
            result.setdefault(positional[0], []).append(arg) if d["kind"] == "string_list" else \
                result.__setitem__(positional[0], arg)
            i += 1
            continue
        name, eq, value = arg[2:].partition("=")
        if name not in defs:
            t.fail(f"invalid Tiltfile config args: flag provided but not defined: -{name}")
        kind = defs[name]["kind"]
        if kind == "bool":
            if eq and value.lower() not in ("true", "false", "1", "0", "t", "f"):
                t.fail(f"invalid boolean value {value!r} for -{name}")
            result[name] = (value.lower() in ("true", "1", "t")) if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(args):
                    t.fail(f"flag needs an argument: -{name}")
                value = args[i]
            if kind == "string_list":
                result.setdefault(name, []).append(value)
            else:
                result[name] = value
        i += 1
    return result


def _dialect() -> sl.Dialect:
    """starlark-go as Tilt configures it: top-level if/for, lambdas, nested defs; no types or f-strings."""
    d = sl.Dialect.extended()
    d.enable_f_strings = False
    d.enable_types = sl.DialectTypes.DISABLE
    d.enable_load_reexport = False
    return d


def _globals() -> sl.Globals:
    return sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])


def evaluate(tiltfile: str | Path, args: list[str] = (), *, subcommand: str = "up", env: dict | None = None,
             run_local: bool = True) -> Result:
    """Load `tiltfile` as `tilt <subcommand> -- <args>` would, and return the assembled graph."""
    return Tilt(Path(tiltfile), list(args), subcommand, env, run_local).run()
