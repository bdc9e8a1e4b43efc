"""The data plane's audit records, byte for byte: each way the gateway writes
``request.allowed``, ``request.denied`` and ``request.completed`` gives exactly the record
it gave before its data became a typed payload (the bytes below were taken from the
producers that built ``data`` dictionaries, at 9afeefc). Encoding version 2 is unchanged:
the tree hashes the same bytes."""

from __future__ import annotations

import collections
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from garrison.audit import AuditEvent
from garrison.domain import Reason, UpstreamApi
from garrison.domain.locks import Lock, LockKind
from garrison.domain.outcomes import CallOutcome
from garrison.errors import NotFound, UpstreamFailed
from garrison.gateway import admission, outcome
from garrison.gateway.call import Call, deny
from garrison.gateway.containment import Cut
from garrison.gateway.metering import Usage

T = 1_700_000_000.25
API = UpstreamApi.OPENAI
LOCK = Lock(
    id="lk_1", kind=LockKind.ALL, target="*", reason="test", created_by="p-0", created_at=T - 1
)
TRACE = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"

GOLDEN: dict[str, bytes] = {
    "denied_unauthenticated": (
        b'{"actor":null,"at":1700000000.25,"credential_id":null,"data":{"status":404,"reas'
        b'ons":["credential.unknown"],"endpoint":"/v1/chat/completions","client_address":"'
        b'198.51.100.7","org_id":"o-1","presented_key_id":"gk_bad"},"i":42,"model":"m-1","'
        b'name":"request.denied","principal_id":null,"request_id":"req_0123456789abcdef","'
        b'v":2}'
    ),
    "denied_policies": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"status":404,"re'
        b'asons":["model.unknown","lock.active"],"policies":["p1","p2"],"endpoint":"/v1/ch'
        b'at/completions","client_address":"198.51.100.7","org_id":"o-1","body_sha256":"ab'
        b'ababababababababababababababababababababababababababababababab","body_bytes":321'
        b'},"i":42,"model":"m-1","name":"request.denied","principal_id":"p-1","request_id"'
        b':"req_0123456789abcdef","v":2}'
    ),
    "denied_lock": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"status":403,"re'
        b'asons":["lock.active"],"lock_id":"lk_1","endpoint":"/v1/chat/completions","clien'
        b't_address":"198.51.100.7","org_id":"o-1","body_sha256":"abababababababababababab'
        b'abababababababababababababababababababab","body_bytes":321},"i":42,"model":"m-1"'
        b',"name":"request.denied","principal_id":"p-1","request_id":"req_0123456789abcdef'
        b'","v":2}'
    ),
    "denied_cut_no_lock": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"status":403,"re'
        b'asons":["credential.revoked"],"lock_id":null,"endpoint":"/v1/chat/completions","'
        b'client_address":"198.51.100.7","org_id":"o-1","body_sha256":"abababababababababa'
        b'babababababababababababababababababababababab","body_bytes":321},"i":42,"model":'
        b'"m-1","name":"request.denied","principal_id":"p-1","request_id":"req_0123456789a'
        b'bcdef","v":2}'
    ),
    "completed_ok": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"status":200,"ou'
        b'tcome":"ok","tokens_in":12,"tokens_out":34,"bytes_out":999,"duration_ms":12.346,'
        b'"ttfb_ms":5.123,"endpoint":"/v1/chat/completions","client_address":"198.51.100.7'
        b'","org_id":"o-1","body_sha256":"abababababababababababababababababababababababab'
        b'abababababababab","body_bytes":321},"i":42,"model":"m-1","name":"request.complet'
        b'ed","principal_id":"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_closed": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"status":499,"ou'
        b'tcome":"client_closed","tokens_in":null,"tokens_out":null,"bytes_out":0,"duratio'
        b'n_ms":12.346,"ttfb_ms":null,"endpoint":"/v1/chat/completions","client_address":"'
        b'198.51.100.7","org_id":"o-1","body_sha256":"abababababababababababababababababab'
        b'abababababababababababababab","body_bytes":321},"i":42,"model":"m-1","name":"req'
        b'uest.completed","principal_id":"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_4xx": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"upstream_messag'
        b'e":"generic","upstream_status":404,"status":404,"outcome":"upstream_404","tokens'
        b'_in":null,"tokens_out":null,"bytes_out":0,"duration_ms":12.346,"ttfb_ms":null,"e'
        b'ndpoint":"/v1/chat/completions","client_address":"198.51.100.7","org_id":"o-1","'
        b'body_sha256":"abababababababababababababababababababababababababababababababab",'
        b'"body_bytes":321},"i":42,"model":"m-1","name":"request.completed","principal_id"'
        b':"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_5xx": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"upstream_status'
        b'":503,"status":502,"outcome":"upstream_503","tokens_in":null,"tokens_out":null,"'
        b'bytes_out":0,"duration_ms":12.346,"ttfb_ms":null,"endpoint":"/v1/chat/completion'
        b's","client_address":"198.51.100.7","org_id":"o-1","body_sha256":"abababababababa'
        b'babababababababababababababababababababababababab","body_bytes":321},"i":42,"mod'
        b'el":"m-1","name":"request.completed","principal_id":"p-1","request_id":"req_0123'
        b'456789abcdef","v":2}'
    ),
    "completed_redirect": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["upst'
        b'ream.redirect"],"upstream_status":302,"status":502,"outcome":"upstream_redirect"'
        b',"tokens_in":null,"tokens_out":null,"bytes_out":0,"duration_ms":12.346,"ttfb_ms"'
        b':null,"endpoint":"/v1/chat/completions","client_address":"198.51.100.7","org_id"'
        b':"o-1","body_sha256":"ababababababababababababababababababababababababababababab'
        b'ababab","body_bytes":321},"i":42,"model":"m-1","name":"request.completed","princ'
        b'ipal_id":"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_listed": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"listed":3,"stat'
        b'us":200,"outcome":"ok","endpoint":"/v1/chat/completions","client_address":"198.5'
        b'1.100.7","org_id":"o-1"},"i":42,"model":"m-1","name":"request.completed","princi'
        b'pal_id":"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_cut": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["lock'
        b'.active"],"lock_id":"lk_9","status":403,"outcome":"cut","tokens_in":null,"tokens'
        b'_out":null,"bytes_out":0,"duration_ms":12.346,"ttfb_ms":null,"endpoint":"/v1/cha'
        b't/completions","client_address":"198.51.100.7","org_id":"o-1","body_sha256":"aba'
        b'babababababababababababababababababababababababababababababab","body_bytes":321}'
        b',"i":42,"model":"m-1","name":"request.completed","principal_id":"p-1","request_i'
        b'd":"req_0123456789abcdef","v":2}'
    ),
    "completed_shutdown": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["gate'
        b'way.shutting_down"],"lock_id":null,"status":503,"outcome":"shutdown","tokens_in"'
        b':1,"tokens_out":0,"bytes_out":5,"duration_ms":12.346,"ttfb_ms":100.0,"endpoint":'
        b'"/v1/chat/completions","client_address":"198.51.100.7","org_id":"o-1","body_sha2'
        b'56":"abababababababababababababababababababababababababababababababab","body_byt'
        b'es":321},"i":42,"model":"m-1","name":"request.completed","principal_id":"p-1","r'
        b'equest_id":"req_0123456789abcdef","v":2}'
    ),
    "completed_usage_flags": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"usage_flags":["'
        b'tokens_in.too_large","tokens_out.negative"],"reasons":["upstream.usage_invalid"]'
        b',"status":200,"outcome":"ok","tokens_in":5,"tokens_out":7,"bytes_out":10,"durati'
        b'on_ms":12.346,"ttfb_ms":200.0,"endpoint":"/v1/chat/completions","client_address"'
        b':"198.51.100.7","org_id":"o-1","body_sha256":"ababababababababababababababababab'
        b'ababababababababababababababab","body_bytes":321},"i":42,"model":"m-1","name":"r'
        b'equest.completed","principal_id":"p-1","request_id":"req_0123456789abcdef","v":2'
        b"}"
    ),
    "completed_cut_usage_flags": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["lock'
        b'.active","upstream.usage_invalid"],"lock_id":"lk_2","usage_flags":["tokens_in.to'
        b'o_large","tokens_out.negative"],"status":403,"outcome":"cut","tokens_in":5,"toke'
        b'ns_out":7,"bytes_out":10,"duration_ms":12.346,"ttfb_ms":200.0,"endpoint":"/v1/ch'
        b'at/completions","client_address":"198.51.100.7","org_id":"o-1","body_sha256":"ab'
        b'ababababababababababababababababababababababababababababababab","body_bytes":321'
        b'},"i":42,"model":"m-1","name":"request.completed","principal_id":"p-1","request_'
        b'id":"req_0123456789abcdef","v":2}'
    ),
    "allowed_plain": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["poli'
        b'cy.allowed"],"policies":["base","clearance"],"stream":true,"upstream_model":"gpt'
        b'-x","level":"restricted","endpoint":"/v1/chat/completions","client_address":"198'
        b'.51.100.7","org_id":"o-1","body_sha256":"abababababababababababababababababababa'
        b'babababababababababababab","body_bytes":321},"i":42,"model":"m-1","name":"reques'
        b't.allowed","principal_id":"p-1","request_id":"req_0123456789abcdef","v":2}'
    ),
    "allowed_full": (
        b'{"actor":"p-1","at":1700000000.25,"credential_id":"k-1","data":{"reasons":["poli'
        b'cy.allowed"],"policies":["base","clearance"],"stream":true,"upstream_model":"gpt'
        b'-x","level":"restricted","justification":"ticket 42","traceparent":"00-aaaaaaaaa'
        b'aaaaaaaaaaaaaaaaaaaaaaa-bbbbbbbbbbbbbbbb-01","dropped_fields":["metadata.x","use'
        b'r"],"dropped_fields_count":2,"content_flags":["pii.email"],"endpoint":"/v1/chat/'
        b'completions","client_address":"198.51.100.7","org_id":"o-1","body_sha256":"ababa'
        b'bababababababababababababababababababababababababababababab","body_bytes":321},"'
        b'i":42,"model":"m-1","name":"request.allowed","principal_id":"p-1","request_id":"'
        b'req_0123456789abcdef","v":2}'
    ),
}


class _Hist:
    def observe(self, value: float) -> None:
        pass


class _Audit:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def append_later(self, event: AuditEvent) -> None:
        self.events.append(event.prepare())


def _state() -> Any:
    latency = SimpleNamespace(duration=_Hist(), ttfb=_Hist(), added=_Hist(), upstream=_Hist())
    return SimpleNamespace(
        outcomes=collections.Counter(),
        refusals=collections.Counter(),
        latency=latency,
        model_outcomes=collections.Counter(),
        clock=lambda: T,
        audit=_Audit(),
    )


def _call(*, body: bool = True, presented: bool = False, allowed: bool = True) -> Call:
    call = Call("/v1/chat/completions", "req_0123456789abcdef", "198.51.100.7")
    call.started, call.forwarded = 100.0, 100.002
    call.principal_id, call.credential_id, call.org_id, call.model = "p-1", "k-1", "o-1", "m-1"
    if presented:
        call.presented_key_id = "gk_bad"
    if body:
        call.body_sha256, call.body_bytes = "ab" * 32, 321
    call.allowed = allowed
    return call


def _flagged() -> Usage:
    usage = Usage(tokens_in=5, tokens_out=7)
    usage.flags = {"tokens_out.negative", "tokens_in.too_large"}
    return usage


def _cut(reason: Reason, lock_id: str | None = None, **kw: Any) -> Call:
    call = _call(**kw)
    call.cut = Cut(reason, lock_id)
    return call


def _stranger() -> Call:
    call = _call(body=False, presented=True, allowed=False)
    call.principal_id = call.credential_id = None
    return call


def _allowed(extra: dict[str, Any]) -> Callable[[Any], None]:
    def write(state: Any) -> None:
        state.audit.append_later(
            _call().allowed_event(
                T,
                reasons=("policy.allowed",),
                policies=("base", "clearance"),
                stream=True,
                upstream_model="gpt-x",
                level="restricted",
                **extra,
            )
        )

    return write


SCENES: dict[str, Callable[[Any], object]] = {
    "denied_unauthenticated": lambda s: deny(
        s, _stranger(), API, NotFound(), (Reason.CREDENTIAL_UNKNOWN,)
    ),
    "denied_policies": lambda s: deny(
        s,
        _call(allowed=False),
        API,
        NotFound(),
        (Reason.MODEL_UNKNOWN, Reason.LOCKED),
        policies=("p1", "p2"),
    ),
    "denied_lock": lambda s: admission.lock_refusal(s, _call(allowed=False), API, LOCK),
    "denied_cut_no_lock": lambda s: outcome.cut_response(
        s, _cut(Reason.CREDENTIAL_REVOKED, allowed=False), API
    ),
    "completed_ok": lambda s: outcome.end_call(
        s,
        _call(),
        CallOutcome.OK,
        status=200,
        usage=Usage(tokens_in=12, tokens_out=34),
        bytes_out=999,
        ttfb=0.0051234,
    ),
    "completed_closed": lambda s: outcome.end_call(
        s, _call(), CallOutcome.CLIENT_CLOSED, status=499
    ),
    "completed_4xx": lambda s: outcome.upstream_error(
        s,
        _call(),
        API,
        NotFound(),
        CallOutcome.UPSTREAM_STATUS,
        upstream_status=404,
        upstream_message="generic",
    ),
    "completed_5xx": lambda s: outcome.upstream_error(
        s, _call(), API, UpstreamFailed(), CallOutcome.UPSTREAM_STATUS, upstream_status=503
    ),
    "completed_redirect": lambda s: outcome.upstream_redirect(s, _call(), API, 302),
    "completed_listed": lambda s: outcome.end_call(
        s, _call(body=False), CallOutcome.OK, status=200, metered=False, listed=3
    ),
    "completed_cut": lambda s: outcome.cut_response(s, _cut(Reason.LOCKED, "lk_9"), API),
    "completed_shutdown": lambda s: outcome.end_call(
        s,
        _cut(Reason.SHUTTING_DOWN),
        CallOutcome.SHUTDOWN,
        status=503,
        usage=Usage(tokens_in=1),
        bytes_out=5,
        ttfb=0.1,
    ),
    "completed_usage_flags": lambda s: outcome.end_call(
        s, _call(), CallOutcome.OK, status=200, usage=_flagged(), bytes_out=10, ttfb=0.2
    ),
    "completed_cut_usage_flags": lambda s: outcome.end_call(
        s,
        _cut(Reason.LOCKED, "lk_2"),
        CallOutcome.CUT,
        status=403,
        usage=_flagged(),
        bytes_out=10,
        ttfb=0.2,
    ),
    "allowed_plain": _allowed({}),
    "allowed_full": _allowed(
        {
            "justification": "ticket 42",
            "traceparent": TRACE,
            "dropped_fields": ("metadata.x", "user"),
            "dropped_fields_count": 2,
            "content_flags": ("pii.email",),
        }
    ),
}


def test_every_golden_record_has_its_scene() -> None:
    assert set(SCENES) == set(GOLDEN)


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_the_record_is_byte_for_byte_what_the_dictionaries_gave(
    scene: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome, "time", SimpleNamespace(perf_counter=lambda: 100.0123456))
    state = _state()
    SCENES[scene](state)
    (event,) = state.audit.events
    assert event.encode(42) == GOLDEN[scene]
    # The typed payload the event carries is what the record reads back as.
    assert event.payload is not None
    assert event.payload.as_data() == event.data
