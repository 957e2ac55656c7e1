"""The README's command-line section, rendered from the commands' own `--help`.

`python -m ragkit.cli.reference --write README.md` refreshes it; a test fails when the README
and the commands disagree, so the documentation cannot drift from the program.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ragkit.cli import main

BEGIN, END = "<!-- cli:begin -->", "<!-- cli:end -->"


def _help_blocks(command: click.Command, name: str, parent: click.Context | None) -> list[str]:
    # Contexts are chained as at run time, so inherited settings (-h) show as users see them.
    ctx = command.make_context(
        name, [], parent=parent, resilient_parsing=True, terminal_width=100, max_content_width=100
    )
    path = ctx.command_path
    blocks = [f"### `{path}`\n\n```text\n{command.get_help(ctx)}\n```"]
    if isinstance(command, click.Group):
        for sub in sorted(command.commands):
            blocks += _help_blocks(command.commands[sub], sub, ctx)
    return blocks


def render() -> str:
    return "\n\n".join(_help_blocks(main, "ragkit", None))


def replace_section(readme: str, body: str) -> str:
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + body + "\n" + readme[end:]


def current_section(readme: str) -> str:
    return readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)].strip()


if __name__ == "__main__":
    target = Path(sys.argv[sys.argv.index("--write") + 1]) if "--write" in sys.argv else None
    if target is None:
        print(render())
    else:
        target.write_text(replace_section(target.read_text(encoding="utf-8"), render()), encoding="utf-8")
