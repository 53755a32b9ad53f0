"""Every command's ``--help`` against the help of main before the CLI became a package (``help_of_main.json``).

Differences may only be additions: every command is still there, and every line of its old help (option
entries joined across their wrapped lines, white space folded) is still in its help, in the same order.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from sam3_trt.cli import main

GOLDEN = json.loads((Path(__file__).with_name("help_of_main.json")).read_text())


def entries(text: str) -> list[str]:
    """Help text as entries: each option or command with its wrapped help, each paragraph; white space folded."""
    out: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            out.append("")
            continue
        starts_entry = re.match(r"^  \S", line) is not None or not line.startswith(" ")
        if starts_entry or not out or not out[-1]:
            out.append(line.strip())
        else:
            out[-1] += " " + line.strip()
    return [re.sub(r"\s+", " ", e) for e in out if e]


def help_of(args: list[str]) -> str:
    result = CliRunner().invoke(main, args, terminal_width=120, prog_name="sam3-trt")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", sorted(GOLDEN))
def test_help_only_grows(command):
    now = entries(help_of([command, "--help"] if command else ["--help"]))
    position = 0
    for entry in entries(GOLDEN[command]):
        assert entry in now[position:], f"sam3-trt {command} --help lost or reordered: {entry!r}"
        position = now.index(entry, position) + 1


def test_every_command_of_main_is_still_there():
    assert set(GOLDEN) - {""} <= set(main.commands)


def test_the_comparison_can_fail():
    old = entries(GOLDEN["segment"])
    changed = GOLDEN["segment"].replace("--max-detections", "--max-dets")
    assert any(e not in entries(changed) for e in old)
