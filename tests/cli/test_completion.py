"""`garrison completion SHELL` prints a script that completes commands for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

GARRISON = [sys.executable, "-m", "garrison.cli.main"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_the_shell(shell: str) -> None:
    out = subprocess.run(
        [*GARRISON, "completion", shell], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "_GARRISON_COMPLETE" in out.stdout


def test_the_completion_protocol_completes_subcommands() -> None:
    """What the printed bash script asks the program for when the user presses Tab."""
    env = {
        **os.environ,
        "_GARRISON_COMPLETE": "bash_complete",
        "COMP_WORDS": "garrison aud",
        "COMP_CWORD": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", "from garrison.cli.main import main; main()"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "plain,audit" in out.stdout.splitlines()


def test_an_unknown_shell_is_a_usage_error() -> None:
    out = subprocess.run(
        [*GARRISON, "completion", "tcsh"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
