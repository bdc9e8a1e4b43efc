"""The identity and token guides' snippets, as far as they run without a provider: every
``toml`` block loads as a config (with a ``[storage]`` section added where the block is a
fragment without one), and every ``garrison`` command line in their shell blocks names a
command and options the CLI has (run with ``--help`` appended: click refuses an unknown
command or option before it answers ``--help``). The sign-ins themselves run against a real
provider in tests/e2e and tests/cli."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from garrison.cli.main import cli
from garrison.config import load_settings

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = ("identity.md", "tokens.md", "operations.md")
TOML = re.compile(r"^```toml\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
SHELL = re.compile(r"^```(?:sh|bash|shell)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
STORAGE = '[storage]\ndatabase_url = "sqlite:////var/lib/garrison/garrison.db"\nkey_dir = "k"\n'


def _blocks(pattern: re.Pattern[str], doc: str) -> list[tuple[int, str]]:
    text = (DOCS / doc).read_text()
    return [(text.count("\n", 0, m.start()) + 1, m["body"]) for m in pattern.finditer(text)]


@pytest.mark.parametrize("doc", GUIDES)
def test_every_config_block_loads(doc: str, tmp_path: Path) -> None:
    blocks = _blocks(TOML, doc)
    assert blocks
    for line, body in blocks:
        path = tmp_path / f"{line}.toml"
        path.write_text(body if "[storage]" in body else STORAGE + body)
        load_settings(path, env={})  # ConfigError names the block's key if it does not


def _command_lines(doc: str) -> list[tuple[int, list[str]]]:
    out = []
    for line, body in _blocks(SHELL, doc):
        for text in body.splitlines():
            text = text.split(" # ")[0].strip()
            if text.startswith("garrison ") and "$(" not in text:
                out.append((line, shlex.split(text)[1:]))
    return out


def test_every_identity_command_line_names_real_options() -> None:
    lines = _command_lines("identity.md")
    assert any("--client-cert" in args for _, args in lines)
    for line, args in lines:
        result = CliRunner().invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, (line, args, result.output)
