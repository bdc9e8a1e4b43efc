"""Detector state export and import (``state()`` / ``restore()``): what the detection worker
stores with its cursor, so that a restart or a takeover continues every window.

The rule: a detector restored from another's state (passed through JSON, as stored) and fed
the rest of a stream finds exactly what the original finds — for every detector, at every
split point. And the state is bounded (``STATE_SUBJECTS_MAX`` subjects, ``STATE_NETWORKS_MAX``
networks a subject, ``STATE_REFUSALS_MAX`` refusals a subject, ``STATE_MAX_BYTES`` stored),
versioned (another version is not restored) and tied to the rule (changed parameters start
afresh).
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from garrison.detect import base, detectors
from garrison.detect import engine as engine_mod
from garrison.detect.engine import DetectionEngine
from garrison.detect.observation import Finding, Obs, Severity
from garrison.detect.rules import RuleSet, parse_rules
from garrison.respond import worker_state
from tests.detect.test_detectors import DAY, FACTS, T0, denied, make, make_rule, obs

# Small parameters, so a short stream makes every detector fire (and learn) several times.
PARAMS: dict[str, dict[str, Any]] = {
    "multi_network": {"window": 600, "min_networks": 2},
    "new_network": {"learning_events": 2},
    "volume": {"bucket": 60, "factor": 2, "min_calls": 3, "warmup_buckets": 1},
    "refusal_burst": {"window": 3600, "threshold": 3},
    "off_hours": {"learning_events": 5, "learning_span": 3600, "min_share": 0.2},
    "dormant": {"dormant": 3600},
    "extraction": {"bucket": 3600, "calls_per_bucket": 2, "sustained_buckets": 2},
    "content": {"patterns": ["x"]},
    "refusal_reason": {"reasons": ["policy.error"]},
}
KEYS = ["k-alice", "k-bob", "k-vic", "k-vera"]
ADDRESSES = ["10.1.1.5", "10.1.2.5", "10.9.9.9", "2001:db8::1", "2001:db8:1::1"]


def stream(seed: int, n: int = 400) -> list[Obs]:
    """Calls, completions and refusals of a few keys from a few networks, over a few hours
    with bursts and pauses (every detector's windows open, fill, close and roll)."""
    rng = random.Random(seed)
    at = T0 + 9 * 3600
    out: list[Obs] = []
    for i in range(n):
        at += rng.choices([0.5, 1, 2, 5, 20, 90, 900, 4000], [4, 4, 4, 3, 2, 2, 1, 1])[0]
        key = rng.choice(KEYS)
        address = rng.choice(ADDRESSES)
        kind = rng.random()
        if kind < 0.6:
            out.append(obs(at, key=key, address=address, model=rng.choice(["m1", "m2"]), index=i))
        elif kind < 0.75:
            out.append(
                obs(at, name="request.completed", key=key, tokens_in=100, tokens_out=50, index=i)
            )
        else:
            reason = rng.choice(["credential.network_not_allowed", "policy.error", "x.other"])
            out.append(denied(at, reason, key=key, address=address, index=i))
    return out


def run(detector: Any, observations: list[Obs]) -> list[Finding]:
    found: list[Finding] = []
    for o in observations:
        found.extend(detector.observe(o, FACTS))
    return found


@pytest.mark.parametrize("name", sorted(detectors.BUILDERS))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_restored_detector_finds_what_the_original_finds(name: str, seed: int) -> None:
    events = stream(seed)
    params = PARAMS.get(name, {})
    for split in (1, 57, 200, 399):
        original = make(name, **params)
        run(original, events[:split])
        copy = make(name, **params)
        copy.restore(orjson.loads(orjson.dumps(original.state())))  # through storage
        assert run(copy, events[split:]) == run(original, events[split:]), (name, split)


def test_the_stream_makes_the_stateful_detectors_fire() -> None:
    """(The test above means something: each stateful detector finds things in it.)"""
    events = stream(1)
    stateful = ("multi_network", "new_network", "volume", "refusal_burst", "extraction")
    for name in (*stateful, "off_hours", "dormant"):
        assert run(make(name, **PARAMS.get(name, {})), events), name


def test_state_keeps_the_most_recently_active_subjects_up_to_the_limit() -> None:
    detector = make("multi_network", window=600)
    for n in range(50):
        detector.observe(obs(T0 + n, key=f"k{n}", principal="alice", address="10.1.1.5"), FACTS)
    state = detector.state(limit=10)
    assert sorted(state) == sorted(f"k{n}" for n in range(40, 50))
    assert len(detector.state()) == 50  # under the default limit: all


def test_state_keeps_at_most_the_network_limit_per_key() -> None:
    detector = make("multi_network", window=600, min_networks=100)
    for n in range(base.STATE_NETWORKS_MAX + 20):
        address = f"10.{n // 250}.{n % 250}.1"
        detector.observe(obs(T0 + n, key="k-alice", address=address), FACTS)
    (nets,) = detector.state().values()
    assert len(nets) == base.STATE_NETWORKS_MAX
    assert max(t for _, t, _ in nets) == T0 + base.STATE_NETWORKS_MAX + 19  # the newest


def test_state_keeps_at_most_the_refusal_limit_per_subject() -> None:
    detector = make("refusal_burst", window=86400, threshold=2)
    for n in range(base.STATE_REFUSALS_MAX + 5):
        detector.observe(denied(T0 + n, "x.other", key="k-alice"), FACTS)
    (times,) = detector.state().values()
    assert len(times) == base.STATE_REFUSALS_MAX


def rules(window: str = "10m") -> RuleSet:
    return parse_rules(
        f"""
rules:
  - id: shared
    title: shared key
    level: high
    detector: multi_network
    window: {window}
  - id: dormant
    title: dormant key
    level: medium
    detector: dormant
    dormant: 1h
"""
    )


def test_engine_state_restores_windows_and_dedup_across_engines() -> None:
    first = DetectionEngine(rules())
    found = first.process(obs(T0, key="k-alice", address="10.1.1.5"), FACTS)
    state = orjson.loads(orjson.dumps(first.state()))
    second = DetectionEngine(rules())
    assert second.restore(state) == ["shared", "dormant"]
    found = second.process(obs(T0 + 60, key="k-alice", address="10.1.2.5"), FACTS)
    assert [f.rule_id for f in found] == ["shared"]  # the window spans the two engines
    verdict = second.judge(found[0])
    assert verdict.new
    third = DetectionEngine(rules())
    third.restore(orjson.loads(orjson.dumps(second.state())))
    assert not third.judge(found[0]).new  # deduplication continues too


def test_a_changed_rule_starts_afresh_and_others_keep_their_state() -> None:
    first = DetectionEngine(rules("10m"))
    first.process(obs(T0, key="k-alice", address="10.1.1.5"), FACTS)
    changed = DetectionEngine(rules("20m"))
    assert changed.restore(first.state()) == ["dormant"]
    found = changed.process(obs(T0 + 60, key="k-alice", address="10.1.2.5"), FACTS)
    assert found == []  # the changed rule's window started again


def test_state_of_another_version_is_not_restored() -> None:
    first = DetectionEngine(rules())
    first.process(obs(T0, key="k-alice", address="10.1.1.5"), FACTS)
    state = first.state()
    state["v"] = engine_mod.STATE_VERSION + 1
    assert DetectionEngine(rules()).restore(state) == []


def test_dedup_state_drops_entries_past_the_window() -> None:
    engine = DetectionEngine(rules())
    old = run(make_rule_detector(), [obs(T0, address="10.1.1.5"), obs(T0 + 1, address="10.1.2.5")])
    engine.judge(old[0])
    late = Finding(**{**_fields(old[0]), "subject_id": "other", "at": T0 + 2 * DAY})
    engine.judge(late)
    assert list(engine.dedup.state()) == ["test-multi-network|credential|other"]


def test_dedup_state_keeps_the_newest_up_to_the_limit() -> None:
    dedup = engine_mod.Dedup()
    for n in range(30):
        dedup.judge(Finding(**{**_fields(FINDING), "subject_id": f"s{n}", "at": T0 + n}))
    kept = dedup.state(limit=10)
    assert sorted(kept) == sorted(f"test|credential|s{n}" for n in range(20, 30))
    assert len(dedup.state()) == 30  # under DEDUP_STATE_MAX: all


FINDING = Finding(
    rule_id="test",
    title="t",
    severity=Severity.LOW,
    subject_kind="credential",
    subject_id="s",
    reason="r",
    at=T0,
)


def make_rule_detector() -> Any:
    return detectors.build(make_rule("multi_network"))


def _fields(finding: Finding) -> dict[str, Any]:
    return {s: getattr(finding, s) for s in Finding.__slots__}


def test_stored_state_is_cut_to_fit_its_byte_limit() -> None:
    engine = DetectionEngine(rules())
    for n in range(2000):
        engine.process(obs(T0 + n, key=f"key-{n:05d}", address=f"10.{n % 200}.0.1"), FACTS)
    whole = worker_state.encode_state(engine)
    cut = worker_state.encode_state(engine, max_bytes=len(whole) // 3)
    assert len(cut) <= len(whole) // 3
    state = worker_state.decode_state(cut)
    assert state is not None
    kept = state["rules"]["shared"]["state"]
    assert 0 < len(kept) < 2000
    assert "key-01999" in kept  # the most recent kept


def test_unreadable_stored_state_starts_afresh() -> None:
    assert worker_state.decode_state(b"not zlib") is None
    assert worker_state.decode_state(None) is None
