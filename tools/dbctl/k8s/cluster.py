"""The Kubernetes API through the official `kubernetes` client: the one module that imports it.

It costs about a second to import, so it is imported here, inside the functions, and only by
commands that talk to a cluster. It connects the way kubectl does: the files KUBECONFIG names
(else ~/.kube/config) and their current context; inside a pod with no kubeconfig, the pod's
service account. Every failure of the API becomes one DbctlError line that says what to do:
KubeconfigError (exit 2) when there is no usable kubeconfig, ClusterError (exit 1) when the API
refused the request or did not answer. Credentials are never part of a message.

Objects come back as plain dicts in the API's JSON form (what `kubectl get -o json` shows).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dbctl.errors import ClusterError, KubeconfigError
from dbctl.text import quoted

REQUEST_TIMEOUT = 15.0  # seconds for one API call (a log that is followed has its own); DBCTL_KUBE_TIMEOUT


@dataclass
class Api:
    """A connection to one cluster: its context's name, its server, and the client."""
    context: str
    server: str
    client: object  # kubernetes.client.ApiClient
    timeout: float = REQUEST_TIMEOUT  # seconds for one call

    @property
    def core(self):
        from kubernetes import client

        return client.CoreV1Api(self.client)

    @property
    def batch(self):
        from kubernetes import client

        return client.BatchV1Api(self.client)

    @property
    def apps(self):
        from kubernetes import client

        return client.AppsV1Api(self.client)

    @property
    def call_timeout(self) -> tuple[float, float]:
        # (connect, read): the client ignores a float given alone (it takes an int or a pair), and waits forever
        return self.timeout, self.timeout

    def as_dict(self, obj) -> dict:
        return self.client.sanitize_for_serialization(obj)


# ---------------------------------------------------------------- connecting

def kubeconfig_paths() -> list[Path]:
    """The files kubectl reads: each one KUBECONFIG lists, else ~/.kube/config."""
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return [Path(p).expanduser() for p in listed] if listed else [Path("~/.kube/config").expanduser()]


def connect() -> Api:
    """The current context of the kubeconfig, as kubectl would use it."""
    from kubernetes import client, config

    timeout = request_timeout()  # a bad setting is a usage error even before there is a cluster
    existing = [p for p in kubeconfig_paths() if p.is_file()]
    configuration = client.Configuration()
    if not existing and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except Exception as exc:  # ConfigException: no token mounted (automountServiceAccountToken: false)
            raise KubeconfigError(f"no kubeconfig, and this pod's service account cannot be used: "
                                  f"{_config_problem(exc)}; mount its token or set KUBECONFIG") from None
        return _api("in-cluster service account", configuration, timeout)
    if not existing:
        raise KubeconfigError(f"no kubeconfig: {_where_looked()}; point KUBECONFIG at your cluster's kubeconfig "
                              "(kind, minikube and scripts/cluster write one), or use the local environment "
                              "without --cluster")
    files = os.pathsep.join(map(str, existing))
    try:
        _, active = config.list_kube_config_contexts(config_file=files)
        config.load_kube_config(config_file=files, client_configuration=configuration, persist_config=False)
    except Exception as exc:  # ConfigException, YAML and file errors: the file is what to fix
        raise KubeconfigError(f"the kubeconfig {files} cannot be used: {_config_problem(exc)}; fix it or select "
                              "a context (kubectl config get-contexts, kubectl config use-context NAME)") from None
    context = (active or {}).get("name", "?")
    if configuration.host == client.Configuration().host:  # no server in the kubeconfig: the client's default
        raise KubeconfigError(f"the kubeconfig {files} cannot be used: the cluster of context {context} has no "
                              "server; fix it or select a context (kubectl config get-contexts, "
                              "kubectl config use-context NAME)")
    return _api(context, configuration, timeout)


def _api(context: str, configuration, timeout: float) -> Api:
    from kubernetes import client

    configuration.retries = 0  # no silent retries (urllib3 would log each one); our loops retry where it helps
    return Api(context=context, server=configuration.host, client=client.ApiClient(configuration),
               timeout=timeout)


def request_timeout() -> float:
    text = os.environ.get("DBCTL_KUBE_TIMEOUT", "").strip()
    if not text:
        return REQUEST_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:
        raise KubeconfigError(f"DBCTL_KUBE_TIMEOUT={quoted(text)} is not a number of seconds; use e.g. 15")
    return seconds


def _where_looked() -> str:
    if os.environ.get("KUBECONFIG"):
        return f"KUBECONFIG={os.environ['KUBECONFIG']} names no file that exists"
    return f"KUBECONFIG is not set and {kubeconfig_paths()[0]} does not exist"


def _config_problem(exc: Exception) -> str:
    """The client's complaint without the objects it quotes: they may hold a token or a key."""
    text = " ".join(str(exc).split())
    missing = re.search(r"Expected key (\S+) in", text)
    if missing:
        return f"a required key is missing: {missing.group(1)}"
    named = re.search(r"Expected object with name (.*) in (\S+) list", text)
    if named:
        return f"{named.group(2).rsplit('/', 1)[-1]} has no entry named {named.group(1)}"
    text = re.sub(r"\{.*\}", "{...}", text)
    return text[:200] or type(exc).__name__


# ---------------------------------------------------------------- errors

@contextmanager
def api_errors(api: Api, action: str, fix_not_found: str = ""):
    """Any failure of the API while `action` as one ClusterError line with the fix."""
    import urllib3.exceptions
    from kubernetes.client.exceptions import ApiException

    try:
        yield
    except ApiException as exc:
        raise ClusterError(describe_api_refusal(api, action, exc.status, _api_message(exc), fix_not_found)) from None
    except urllib3.exceptions.MaxRetryError as exc:
        raise ClusterError(describe_unreachable(api, action, exc.reason)) from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise ClusterError(describe_unreachable(api, action, exc)) from None


def _api_message(exc) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return exc.reason or ""


def describe_api_refusal(api: Api, action: str, status: int, message: str, fix_not_found: str = "") -> str:
    """The API answered with an error status: say which, and what to do about it."""
    who = f"context {api.context} ({api.server})"
    if status == 401:
        return (f"{action}: the cluster refused the credentials of {who}: 401 Unauthorized (expired or invalid "
                "token or certificate); get a fresh kubeconfig from your cluster (e.g. kind export kubeconfig, "
                "scripts/cluster up) and check with kubectl auth whoami")
    if status == 403:
        return (f"{action}: {who} is not allowed to: 403 Forbidden: {message}; ask for an RBAC Role that grants it "
                "(kubectl auth can-i --list shows what you may do), or use a context that has it")
    if status == 404:
        return (f"{action}: not found: {message}; "
                + (fix_not_found or "check --namespace and the names (tilt up creates the namespace and its objects)"))
    if status == 409:
        return (f"{action}: 409 Conflict: {message}; something else changed it at the same time "
                "(a Tilt trigger, another dbctl): wait for that to finish and run it again")
    return (f"{action}: the API server of {who} answered {status}: {message}; check the cluster's health "
            "(kubectl get --raw /readyz) and run it again")


def describe_unreachable(api: Api, action: str, reason) -> str:
    """No answer from the API server: refused, timed out, TLS, DNS."""
    import ssl

    import urllib3.exceptions

    text = " ".join(str(reason).split())
    if isinstance(reason, urllib3.exceptions.SSLError) or isinstance(reason, ssl.SSLError) or "CERTIFICATE" in text:
        why, fix = (f"TLS failed ({_short(text)})",
                    "the kubeconfig's certificate authority does not match the cluster: get a fresh kubeconfig")
    elif "Connection refused" in text:  # before timeouts: urllib3's NewConnectionError is a ConnectTimeoutError
        why, fix = ("connection refused", "start the cluster (kind create cluster, scripts/cluster up) or select "
                                          "another context (kubectl config use-context NAME)")
    elif isinstance(reason, urllib3.exceptions.TimeoutError) or "timed out" in text:
        why, fix = ("no answer in time", "is the cluster up? (kubectl cluster-info)")
    elif "Name or service not known" in text or "nodename nor servname" in text or "resolution" in text:
        why, fix = ("the server's name does not resolve", "check the server in the kubeconfig, or your network")
    else:
        why, fix = (_short(text), "is the cluster up? (kubectl cluster-info)")
    return f"{action}: cannot reach the Kubernetes API at {api.server} (context {api.context}): {why}; {fix}"


def _short(text: str) -> str:
    # urllib3 quotes its connection object ("<urllib3.connection...>: Failed to establish..."): keep the reason
    text = re.sub(r"<[^>]*>:?\s*", "", text)
    return text[:160]


# ---------------------------------------------------------------- reading and changing objects

def read(api: Api, kind: str, name: str, namespace: str) -> dict | None:
    """The object (job, deployment, pod, secret or namespace) as a dict, or None when it does not exist."""
    from kubernetes.client.exceptions import ApiException

    readers = {
        "job": lambda: api.batch.read_namespaced_job(name, namespace, _request_timeout=api.call_timeout),
        "deployment": lambda: api.apps.read_namespaced_deployment(name, namespace, _request_timeout=api.call_timeout),
        "pod": lambda: api.core.read_namespaced_pod(name, namespace, _request_timeout=api.call_timeout),
        "secret": lambda: api.core.read_namespaced_secret(name, namespace, _request_timeout=api.call_timeout),
        "namespace": lambda: api.core.read_namespace(name, _request_timeout=api.call_timeout),
    }
    where = "" if kind == "namespace" else f" in namespace {namespace}"
    with api_errors(api, f"reading {kind} {name}{where}"):
        try:
            return api.as_dict(readers[kind]())
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def create_job(api: Api, namespace: str, body: dict) -> dict:
    name = body["metadata"]["name"]
    with api_errors(api, f"creating job {name} in namespace {namespace}",
                    f"create the namespace first (tilt up, or kubectl create namespace {namespace}), "
                    "or pass --namespace"):
        return api.as_dict(api.batch.create_namespaced_job(namespace, body, _request_timeout=api.call_timeout))


def delete_job(api: Api, name: str, namespace: str) -> bool:
    """Delete the Job and, before it goes, its pods (foreground); False when there was none."""
    from kubernetes.client.exceptions import ApiException

    with api_errors(api, f"deleting job {name} in namespace {namespace}"):
        try:
            api.batch.delete_namespaced_job(name, namespace, propagation_policy="Foreground",
                                            _request_timeout=api.call_timeout)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def patch_job(api: Api, name: str, namespace: str, patch: dict) -> dict:
    with api_errors(api, f"changing job {name} in namespace {namespace}"):
        return api.as_dict(api.batch.patch_namespaced_job(name, namespace, patch, _request_timeout=api.call_timeout))


def list_pods(api: Api, namespace: str, selector: str) -> list[dict]:
    """The pods matching the label selector, oldest first."""
    with api_errors(api, f"listing the pods {selector} in namespace {namespace}"):
        found = api.core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=api.call_timeout)
    pods = [api.as_dict(pod) for pod in found.items]
    return sorted(pods, key=lambda p: (p["metadata"].get("creationTimestamp") or "", p["metadata"]["name"]))


def follow_log(api: Api, pod: str, container: str, namespace: str, timeout: float):
    """The container's log lines from its start, followed until it ends (or `timeout` seconds pass)."""
    import urllib3.exceptions

    with api_errors(api, f"reading the log of pod {pod} ({container}) in namespace {namespace}"):
        stream = api.core.read_namespaced_pod_log(pod, namespace, container=container, follow=True,
                                                  _preload_content=False,
                                                  _request_timeout=(api.timeout, max(timeout, 1.0)))
    pending = b""
    try:
        for chunk in stream.stream(4096, decode_content=True):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.decode("utf-8", "backslashreplace")
    except urllib3.exceptions.ReadTimeoutError:
        pass  # `timeout` passed: the caller says what it was waiting for
    except urllib3.exceptions.ProtocolError as exc:
        raise ClusterError(describe_unreachable(api, f"following the log of pod {pod}", exc)) from None
    finally:
        stream.release_conn()
    if pending:
        yield pending.decode("utf-8", "backslashreplace")


def server_version(api: Api, timeout: float | None = None) -> str:
    from kubernetes import client

    with api_errors(api, "asking the cluster for its version"):
        return client.VersionApi(api.client).get_code(_request_timeout=(timeout or api.timeout,) * 2).git_version
