"""Tests for ``garrison.config.load_settings``: the TOML file and environment overrides."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

import garrison.config as config_doc
from garrison.config import DEFAULT_PORT, Settings, load_settings, render_settings
from garrison.config_keys import CONFIG_SECTIONS
from garrison.edge.client_address import ForwardedHeader
from garrison.errors import ConfigError
from garrison.gateway.limits import MAX_BODY_BYTES, GatewayLimits

STORAGE = """
[storage]
database_url = "sqlite:////var/lib/garrison/garrison.db"
key_dir = "/var/lib/garrison/keys"
"""
GATEWAY = """
[gateway]
host = "0.0.0.0"
port = 9090
trusted_proxies = ["10.0.0.0/8", "fd00::/8"]
"""
FULL = GATEWAY + STORAGE


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "garrison.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), env=env or {})


def config_error(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return str(info.value)


# ── the file ──────────────────────────────────────────────────────────────────────────────


def test_file_values_are_read(tmp_path: Path) -> None:
    s = load(tmp_path, FULL)
    assert (s.host, s.port, s.database_url, s.key_dir) == (
        "0.0.0.0",
        9090,
        "sqlite:////var/lib/garrison/garrison.db",
        Path("/var/lib/garrison/keys"),
    )


def test_trusted_proxies_are_parsed_as_networks(tmp_path: Path) -> None:
    assert load(tmp_path, FULL).trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )


def test_gateway_defaults_apply_without_a_gateway_table(tmp_path: Path) -> None:
    s = load(tmp_path, STORAGE)
    assert (s.host, s.port, s.trusted_proxies) == ("127.0.0.1", DEFAULT_PORT, ())


def test_default_limits_apply_without_a_limits_table(tmp_path: Path) -> None:
    assert load(tmp_path, STORAGE).limits == GatewayLimits()


def test_limit_from_the_file_is_applied(tmp_path: Path) -> None:
    s = load(tmp_path, STORAGE + "\n[limits]\nmax_body_bytes = 1024\n")
    assert s.limits.max_body_bytes == 1024


def test_limit_from_the_file_leaves_other_limits_at_their_defaults(tmp_path: Path) -> None:
    s = load(tmp_path, STORAGE + "\n[limits]\nstream_max_seconds = 60.5\n")
    assert (s.limits.stream_max_seconds, s.limits.max_body_bytes) == (60.5, MAX_BODY_BYTES)


def test_relative_key_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    text = '[storage]\ndatabase_url = "sqlite://"\nkey_dir = "keys"\n'
    assert load(tmp_path, text).key_dir == tmp_path / "keys"


def test_trusted_proxies_may_be_a_comma_separated_string(tmp_path: Path) -> None:
    s = load(tmp_path, '[gateway]\ntrusted_proxies = "10.0.0.0/8, 192.168.0.0/16"\n' + STORAGE)
    assert len(s.trusted_proxies) == 2


def test_rendered_settings_load_back(tmp_path: Path) -> None:
    original = load(tmp_path, FULL)
    path = tmp_path / "again" / "garrison.toml"
    path.parent.mkdir()
    path.write_text(render_settings(original))
    assert load_settings(path, env={}) == original


# ── environment overrides ─────────────────────────────────────────────────────────────────


def test_env_host_overrides_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, FULL, {"GARRISON_HOST": "127.0.0.2"}).host == "127.0.0.2"


def test_env_port_overrides_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, FULL, {"GARRISON_PORT": "7000"}).port == 7000


def test_env_database_url_overrides_the_file(tmp_path: Path) -> None:
    s = load(tmp_path, FULL, {"GARRISON_DATABASE_URL": "sqlite:///other.db"})
    assert s.database_url == "sqlite:///other.db"


def test_env_key_dir_overrides_the_file(tmp_path: Path) -> None:
    assert load(tmp_path, FULL, {"GARRISON_KEY_DIR": "/srv/keys"}).key_dir == Path("/srv/keys")


def test_env_trusted_proxies_override_the_file(tmp_path: Path) -> None:
    s = load(tmp_path, FULL, {"GARRISON_TRUSTED_PROXIES": "192.168.0.0/16,172.16.0.0/12"})
    assert s.trusted_proxies == (
        ipaddress.ip_network("192.168.0.0/16"),
        ipaddress.ip_network("172.16.0.0/12"),
    )


def test_empty_env_trusted_proxies_clears_the_file_list(tmp_path: Path) -> None:
    assert load(tmp_path, FULL, {"GARRISON_TRUSTED_PROXIES": ""}).trusted_proxies == ()


def test_env_supplies_storage_missing_from_the_file(tmp_path: Path) -> None:
    env = {"GARRISON_DATABASE_URL": "sqlite://", "GARRISON_KEY_DIR": "/srv/keys"}
    assert load(tmp_path, "", env).database_url == "sqlite://"


def test_unrelated_env_is_ignored(tmp_path: Path) -> None:
    assert load(tmp_path, FULL, {"HOST": "evil", "PORT": "1"}) == load(tmp_path, FULL)


def test_process_environment_is_used_when_no_env_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GARRISON_PORT", "7001")
    assert load_settings(write(tmp_path, FULL)).port == 7001


# ── refusals ──────────────────────────────────────────────────────────────────────────────


def test_missing_file_is_a_config_error_naming_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*garrison init"):
        load_settings(tmp_path / "absent.toml", env={})


def test_bad_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    assert "garrison.toml" in config_error(tmp_path, "[storage\nkey_dir = ")


def test_bad_toml_error_says_where(tmp_path: Path) -> None:
    assert "line" in config_error(tmp_path, STORAGE + "\nport = = 3\n")


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ('[storage]\nkey_dir = "/k"\n', "database_url"),
        ('[storage]\ndatabase_url = "sqlite://"\n', "key_dir"),
        ("", "database_url"),
    ],
)
def test_missing_storage_key_is_a_config_error_naming_it(
    tmp_path: Path, text: str, missing: str
) -> None:
    message = config_error(tmp_path, text)
    assert ("[storage]" in message, missing in message) == (True, True)


@pytest.mark.parametrize("cidr", ["10.0.0.0/33", "not-a-cidr", "10.0.0.1/8", "fd00::/129"])
def test_bad_cidr_in_the_file_is_a_config_error_naming_it(tmp_path: Path, cidr: str) -> None:
    assert cidr in config_error(tmp_path, f'[gateway]\ntrusted_proxies = ["{cidr}"]\n' + STORAGE)


def test_bad_cidr_in_the_env_is_a_config_error(tmp_path: Path) -> None:
    assert "bogus" in config_error(tmp_path, FULL, {"GARRISON_TRUSTED_PROXIES": "bogus"})


def test_trusted_proxies_of_the_wrong_type_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[gateway]\ntrusted_proxies = 10\n" + STORAGE)
    assert "trusted_proxies" in message


def test_unknown_limit_is_a_config_error_naming_it(tmp_path: Path) -> None:
    message = config_error(tmp_path, STORAGE + "\n[limits]\nmax_bodybytes = 5\n")
    assert "'max_bodybytes'" in message


def test_unknown_limit_error_lists_the_known_limits(tmp_path: Path) -> None:
    message = config_error(tmp_path, STORAGE + "\n[limits]\nmax_bodybytes = 5\n")
    assert "max_body_bytes" in message


@pytest.mark.parametrize("value", ["0", "-1", "-0.5", "0.0"])
def test_non_positive_limit_is_a_config_error(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, STORAGE + f"\n[limits]\nmax_body_bytes = {value}\n")
    assert ("'max_body_bytes'" in message, "positive" in message) == (True, True)


@pytest.mark.parametrize("value", ['"1024"', "true", "[1]"])
def test_non_numeric_limit_is_a_config_error(tmp_path: Path, value: str) -> None:
    message = config_error(tmp_path, STORAGE + f"\n[limits]\nmax_body_bytes = {value}\n")
    assert "'max_body_bytes'" in message


def test_nan_limit_is_a_config_error(tmp_path: Path) -> None:
    message = config_error(tmp_path, STORAGE + "\n[limits]\nbody_read_timeout_s = nan\n")
    assert "'body_read_timeout_s'" in message


def test_non_numeric_env_port_is_a_config_error(tmp_path: Path) -> None:
    assert "'http'" in config_error(tmp_path, FULL, {"GARRISON_PORT": "http"})


def test_non_numeric_file_port_is_a_config_error(tmp_path: Path) -> None:
    assert "port" in config_error(tmp_path, '[gateway]\nport = "http"\n' + STORAGE)


def test_port_of_the_wrong_toml_type_is_a_config_error(tmp_path: Path) -> None:
    assert "port" in config_error(tmp_path, "[gateway]\nport = [8080]\n" + STORAGE)


def test_forwarded_header_defaults_to_x_forwarded_for(tmp_path: Path) -> None:
    assert load(tmp_path, FULL).forwarded_header is ForwardedHeader.X_FORWARDED_FOR


def test_forwarded_header_may_name_rfc_7239(tmp_path: Path) -> None:
    text = FULL.replace("[gateway]\n", '[gateway]\nforwarded_header = "Forwarded"\n')
    assert load(tmp_path, text).forwarded_header is ForwardedHeader.FORWARDED


def test_unknown_forwarded_header_is_refused(tmp_path: Path) -> None:
    text = FULL.replace("[gateway]\n", '[gateway]\nforwarded_header = "x-real-ip"\n')
    assert "forwarded_header" in config_error(tmp_path, text)


# ── unknown keys and sections are refused, naming the key and the file ─────────────────────
def test_misspelt_key_is_refused_naming_it_its_section_and_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, "[gateway]\nprot = 8080\n" + STORAGE)
    assert "'prot'" in message and "[gateway]" in message
    assert str(tmp_path / "garrison.toml") in message
    assert "did you mean 'port'" in message


def test_misspelt_section_is_refused_naming_it_and_the_file(tmp_path: Path) -> None:
    message = config_error(tmp_path, FULL + "[limts]\nmax_body_bytes = 1\n")
    assert "[limts]" in message and str(tmp_path / "garrison.toml") in message
    assert "did you mean 'limits'" in message


@pytest.mark.parametrize("section", sorted(CONFIG_SECTIONS))
def test_unknown_key_is_refused_in_every_section(tmp_path: Path, section: str) -> None:
    text = FULL if section in ("gateway", "storage") else FULL + f"[{section}]\n"
    text = text.replace(f"[{section}]\n", f"[{section}]\nbogus_key = 1\n")
    message = config_error(tmp_path, text)
    assert "'bogus_key'" in message and f"[{section}]" in message


def test_top_level_key_outside_any_section_is_refused(tmp_path: Path) -> None:
    assert "unknown section [port]" in config_error(tmp_path, "port = 8080\n" + FULL)


def test_section_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    assert "[gateway] must be a table" in config_error(tmp_path, "gateway = 1\n" + STORAGE)


def _documented_config() -> str:
    text = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    section = text[text.index("## Configuration") :]
    return section[section.index("```toml\n") + 8 : section.index("```\n", 10)]


def test_every_key_the_operations_guide_shows_is_known(tmp_path: Path) -> None:
    settings = load(tmp_path, _documented_config())
    assert settings.alerts_webhook_url is not None


def test_every_key_the_config_module_documents_is_known(tmp_path: Path) -> None:
    assert config_doc.__doc__ is not None
    example = config_doc.__doc__.split("\n\nEnvironment overrides")[0]
    lines = [line[4:] for line in example.splitlines() if line.startswith("    ")]
    assert load(tmp_path, "\n".join(lines)).port == 8080


def test_render_settings_writes_only_known_keys(tmp_path: Path) -> None:
    written = render_settings(Settings.for_data_dir(tmp_path))
    assert load(tmp_path, written).database_url.endswith("garrison.db")
