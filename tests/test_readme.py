"""The README's two set-up commands are the ones CI runs, so a green CI means they work on a fresh machine."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "the README opens with a sh block of two commands"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_opens_with_two_commands() -> None:
    assert len(_readme_commands()) == 2


def test_ci_runs_both_readme_commands_verbatim() -> None:
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in _readme_commands():
        assert command in script
