"""Every event name has one payload class, and a typed payload answers the facts readers
take exactly as the record's dictionary did; what no class reads (an unknown name, a record
missing a required key) still reads, as ``Untyped``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from garrison.audit.events import EventName
from garrison.audit.payload_base import ABSENT, Payload, keyed, named, required
from garrison.audit.payloads import PAYLOAD_CLASSES, Untyped, payload_of
from garrison.audit.payloads_directory import CredentialRevoked, OrgCreated, VendorSuspended
from tests.audit.test_payload_golden import GOLDEN

# What readers (the detectors) take from any event's data: garrison.audit.events.EventFacts.
FACTS = (
    "org_id",
    "client_address",
    "status",
    "outcome",
    "reasons",
    "tokens_in",
    "tokens_out",
    "presented_key_id",
    "content_flags",
)


def _golden() -> list[tuple[str, dict[str, Any]]]:
    return [(name, orjson.loads(data)) for name, data in orjson.loads(GOLDEN.read_bytes())]


def test_every_event_name_has_a_payload_class() -> None:
    typed = {EventName(name) for name in PAYLOAD_CLASSES}
    missing = set(EventName) - typed
    assert not missing, f"event names with no payload class: {sorted(missing)}"
    assert len(PAYLOAD_CLASSES) == len(EventName)  # one class a name, none for another


def test_each_payload_class_is_registered_under_its_own_name() -> None:
    for name, cls in PAYLOAD_CLASSES.items():
        assert cls.NAME.value == name


@pytest.mark.parametrize(("name", "data"), _golden(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_typed_payload_answers_the_facts_its_dictionary_did(
    name: str, data: dict[str, Any]
) -> None:
    typed = payload_of(name, data)
    assert not isinstance(typed, Untyped)
    untyped = Untyped(data)
    assert {f: getattr(typed, f) for f in FACTS} == {f: getattr(untyped, f) for f in FACTS}


def test_a_record_under_an_unknown_name_reads_as_untyped() -> None:
    data = {"org_id": "org_1", "reasons": ["x"], "client_address": "10.0.0.1"}
    found = payload_of("gateway.renamed_in_a_later_version", data)
    assert isinstance(found, Untyped)
    assert (found.org_id, found.reasons, found.client_address) == ("org_1", ("x",), "10.0.0.1")
    assert found.as_data() == data


def test_a_record_without_a_required_key_reads_as_untyped() -> None:
    data = {"org_id": "org_1", "name": "acme"}  # no "kind": not what any producer wrote
    found = payload_of(EventName.ORG_CREATED.value, data)
    assert isinstance(found, Untyped)
    assert found.org_id == "org_1"


def test_an_absent_key_is_left_out_and_a_none_is_written_as_null() -> None:
    made = OrgCreated(org_id="o", name="n", kind="vendor", security_review_at=None)
    assert made.as_data() == {
        "org_id": "o",
        "name": "n",
        "kind": "vendor",
        "security_review_at": None,
    }
    assert CredentialRevoked(reason="r").as_data() == {"reason": "r"}
    assert made.sponsor_id is ABSENT


def test_a_keyed_field_is_written_under_its_key() -> None:
    made = VendorSuspended(
        org_id="o",
        name="n",
        from_status="active",
        to="suspended",
        reason="",
        keys_revoked=0,
        principals_disabled=0,
    )
    assert list(made.as_data())[2] == "from"
    assert payload_of("vendor.suspended", made.as_data()) == made


def test_a_field_named_as_a_fact_must_be_declared_required() -> None:
    from dataclasses import dataclass

    with pytest.raises(TypeError, match="required"):

        @named(EventName.ORG_CREATED)
        @dataclass(frozen=True, slots=True, kw_only=True)
        class _Careless(Payload):
            org_id: str  # the base's property would become its default

    @named(EventName.ORG_CREATED)
    @dataclass(frozen=True, slots=True, kw_only=True)
    class _Careful(Payload):
        org_id: str = required()
        to: str = keyed("to")

    assert _Careful(org_id="o", to="t").org_id == "o"
