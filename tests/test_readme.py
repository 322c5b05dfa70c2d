"""The README is the command reference: every command and option in `--help` is documented there."""

import click

from conftest import REPO, leaf_commands
from dbctl.cli.main import cli


def test_every_command_and_option_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    undocumented = []
    for path, command in leaf_commands(cli):
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
