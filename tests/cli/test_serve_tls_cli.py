"""``garrison serve`` with TLS files and an admin listener: a pair that cannot be used, and an
admin port already taken, each stop the start with one line and exit status 2."""

from __future__ import annotations

import socket
from pathlib import Path

from garrison.bootstrap import init
from tests.cli.conftest import garrison
from tests.support.certs import issue, make_ca


def _config(tmp_path: Path, extra_gateway: str = "", extra_admin: str = "") -> Path:
    done = init(tmp_path / "data")
    config = tmp_path / "data" / "garrison.toml"
    text = config.read_text()
    text = text.replace("port = 8080\n", f"port = 0\n{extra_gateway}")
    text = text.replace("[admin]\n", f"[admin]\n{extra_admin}")
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = ""')
    config.write_text(text)
    assert done.settings.database_url
    return config


def test_a_key_that_does_not_match_is_one_line_and_exit_2(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    other_cert, other_key = tmp_path / "other.pem", tmp_path / "other-key.pem"
    issue(ca, cert, key)
    issue(ca, other_cert, other_key)
    config = _config(tmp_path, f'tls_cert_file = "{cert}"\ntls_key_file = "{other_key}"\n')
    result = garrison("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [
        f"error: [gateway] tls_key_file {other_key} does not match [gateway] tls_cert_file {cert}"
    ]


def test_a_taken_admin_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, extra_admin=f'listen = "127.0.0.1:{port}"\n')
        result = garrison("serve", "--config", str(config))
    assert result.returncode == 2, result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines[-1] == (
        f"error: port {port} is already in use: choose another with [admin] listen in the config"
    ), lines
    assert "Traceback" not in result.stderr
