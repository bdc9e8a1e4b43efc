"""[identity.oidc]: providers, vendor binding, and what the configuration refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from garrison.admin.session_api import may_assert, nonce_names_key, session_roles
from garrison.config import Settings, load_settings
from garrison.domain import Org, OrgKind
from garrison.errors import ConfigError
from garrison.identity.oidc_config import OidcProvider, parse_oidc

BASE = """
[storage]
database_url = "sqlite:///x.db"
key_dir = "keys"
"""


def settings(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "garrison.toml"
    path.write_text(BASE + text)
    return load_settings(path, env={})


def test_no_section_means_no_sign_in(tmp_path: Path) -> None:
    assert not settings(tmp_path, "").oidc.enabled


def test_own_and_vendor_providers_are_read(tmp_path: Path) -> None:
    oidc = settings(
        tmp_path,
        """
[identity.oidc]
issuer = "https://idp.example.com"
client_id = "garrison"
client_secret_env = "GARRISON_OIDC_SECRET"
role_groups = { "security-admin" = "garrison-admins" }

[identity.oidc.acme]
issuer = "https://login.acme.example"
client_id = "garrison-acme"
""",
    ).oidc
    own = oidc.by_issuer("https://idp.example.com")
    acme = oidc.by_name("acme")
    assert own is not None and own.vendor is None and own.role_groups
    assert own.client_secret_env == "GARRISON_OIDC_SECRET"
    assert acme is not None and acme.vendor == "acme" and not acme.role_groups


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"client_id": "x"}, "issuer"),
        ({"issuer": "http://idp.example.com", "client_id": "x"}, "https"),
        ({"issuer": "https://i.example", "client_id": "x", "algorithms": ["HS256"]}, "HS256"),
        ({"issuer": "https://i.example", "client_id": "x", "algorithms": ["none"]}, "none"),
        ({"issuer": "https://i.example", "client_id": "x", "scopes": ["email"]}, "openid"),
        ({"issuer": "https://i.example", "client_id": "x", "clientid": "y"}, "clientid"),
        ({"issuer": "https://i.example", "client_id": "x", "role_groups": {"god": "g"}}, "god"),
    ],
)
def test_bad_provider_tables_are_refused(table: dict[str, object], complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_oidc(table, "garrison.toml")


def test_a_vendors_provider_cannot_map_roles() -> None:
    table = {
        "issuer": "https://i.example",
        "client_id": "x",
        "acme": {
            "issuer": "https://a.example",
            "client_id": "y",
            "role_groups": {"vendor-manager": "managers"},
        },
    }
    with pytest.raises(ConfigError, match="never maps to any role"):
        parse_oidc(table, "garrison.toml")


def test_two_providers_cannot_share_an_issuer() -> None:
    table = {
        "issuer": "https://i.example",
        "client_id": "x",
        "v": {"issuer": "https://i.example", "client_id": "y"},
    }
    with pytest.raises(ConfigError, match="share"):
        parse_oidc(table, "garrison.toml")


OWN = OidcProvider(issuer="https://i", client_id="g", role_groups={"security-admin": "admins"})
ACME = OidcProvider(issuer="https://a", client_id="g", vendor="acme")
INTERNAL = Org("org_1", "internal", OrgKind.INTERNAL)
ACME_ORG = Org("org_2", "acme", OrgKind.VENDOR)
OTHER_VENDOR = Org("org_3", "globex", OrgKind.VENDOR)


def test_a_vendors_provider_asserts_only_that_vendors_people() -> None:
    check = may_assert(ACME, frozenset({"acme"}))
    assert check(None, ACME_ORG)
    assert not check(None, INTERNAL)
    assert not check(None, OTHER_VENDOR)


def test_the_own_provider_cannot_assert_people_of_a_vendor_with_its_own_provider() -> None:
    check = may_assert(OWN, frozenset({"acme"}))
    assert check(None, INTERNAL) and check(None, OTHER_VENDOR)
    assert not check(None, ACME_ORG)


def test_groups_only_narrow_roles() -> None:
    held = frozenset({"security-admin", "auditor"})
    kept, dropped = session_roles(held, OWN, frozenset({"admins"}))
    assert kept == held and not dropped
    kept, dropped = session_roles(held, OWN, frozenset())
    assert kept == {"auditor"} and dropped == {"security-admin"}
    # Being in a group grants nothing the person does not hold in Garrison.
    kept, _ = session_roles(frozenset(), OWN, frozenset({"admins"}))
    assert kept == frozenset()


def test_the_nonce_must_name_the_proofs_key() -> None:
    assert nonce_names_key("jktA.r4nd0m", "jktA")
    assert not nonce_names_key("jktB.r4nd0m", "jktA")
    assert not nonce_names_key("jktA", "jktA")
    assert not nonce_names_key("jktA.", "jktA")
