"""`garrison vendor update` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli_e2e import run

pytestmark = pytest.mark.e2e


def test_vendor_update_changes_terms_and_refuses_narrowing_with_a_clear_line(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = str(data / "garrison.toml")
    assert run("init", "--data-dir", str(data)).returncode == 0
    assert (
        run(
            "vendor",
            "add",
            "acme",
            "--sponsor",
            "admin",
            "--contract-end",
            "2099-01-01",
            "--network",
            "10.1.0.0/16",
            "--seats",
            "2",
            "--config",
            config,
        ).returncode
        == 0
    )
    assert run("vendor", "activate", "acme", "--config", config).returncode == 0
    assert run("user", "add", "vic", "--org", "acme", "--config", config).returncode == 0
    assert run("key", "create", "vic", "--config", config).returncode == 0
    refused = run("vendor", "update", "acme", "--network", "10.9.0.0/16", "--config", config)
    assert refused.returncode == 2
    assert "rule vendor-networks" in refused.stderr and "Traceback" not in refused.stderr
    done = run(
        "vendor", "update", "acme", "--seats", "5", "--agreement", "MSA-9", "--config", config
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"seat_limit": 5, "agreement_ref": "MSA-9"}
