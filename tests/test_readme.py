"""The README is the command reference: every command and option in `--help` is documented there."""

import click

from conftest import REPO
from dbctl.cli.main import cli


def _leaf_commands(group, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, path + (name,))
        else:
            yield path + (name,), command


def test_every_command_and_option_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    undocumented = []
    for path, command in _leaf_commands(cli):
        name = "dbctl " + " ".join(path)
        if name not in readme:
            undocumented.append(name)
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                undocumented += [f"{name} {opt}" for opt in param.opts if opt.startswith("--") and opt not in readme]
    assert undocumented == []


def test_readme_opens_with_the_two_setup_commands():
    readme = (REPO / "README.md").read_text()
    head = readme[: readme.index("## Tilt")] if "## Tilt" in readme else readme[:2000]
    assert "make up" in head and "make test" in head
