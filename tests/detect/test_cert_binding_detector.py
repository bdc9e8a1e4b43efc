"""The ``cert_binding`` detector: a certificate-bound key refused for a missing or wrong
client certificate is a leaked key. One finding per key per window, bounded memory."""

from __future__ import annotations

from garrison.detect import base
from tests.detect.test_detectors import FACTS, T0, denied, feed, make, obs


def test_a_bound_key_without_its_certificate_raises_one_finding() -> None:
    detector = make("cert_binding", window="1h")
    (found,) = feed(detector, [denied(T0, "credential.cert_missing", status=401)])
    assert found.reason == "detect.cert_binding_violation"
    assert (found.subject_kind, found.subject_id) == ("credential", "k-alice")
    assert found.data["reasons"] == ["credential.cert_missing"]


def test_a_wrong_certificate_counts_too() -> None:
    detector = make("cert_binding")
    (found,) = feed(detector, [denied(T0, "credential.cert_mismatch", status=401)])
    assert found.data["reasons"] == ["credential.cert_mismatch"]


def test_retries_within_the_window_are_the_same_leak() -> None:
    detector = make("cert_binding", window=600)
    retries = [denied(T0 + n * 10, "credential.cert_missing") for n in range(30)]
    assert len(feed(detector, retries)) == 1
    # After the window a refusal fires again; another key fires at once.
    assert len(feed(detector, [denied(T0 + 900, "credential.cert_missing")])) == 1
    assert len(feed(detector, [denied(T0 + 901, "credential.cert_missing", key="k-bob")])) == 1


def test_other_refusals_and_allowed_calls_are_not_its_business() -> None:
    detector = make("cert_binding")
    quiet = [
        denied(T0, "credential.unknown", status=401),
        denied(T0, "policy.clearance"),
        obs(T0),
        denied(T0, "credential.cert_missing", key=None, presented=None),
    ]
    assert feed(detector, quiet) == []


def test_its_state_survives_a_restart() -> None:
    first = make("cert_binding", window=600)
    feed(first, [denied(T0, "credential.cert_missing")])
    second = make("cert_binding", window=600)
    second.restore(first.state())
    assert feed(second, [denied(T0 + 60, "credential.cert_missing")]) == []


def test_a_spray_of_bound_keys_leaves_it_bounded() -> None:
    detector = make("cert_binding", window=60)
    spray = 3 * base.STATE_SUBJECTS_MAX
    for n in range(spray):
        detector.observe(denied(T0 + n * 0.01, "credential.cert_missing", key=f"k-{n}"), FACTS)
        assert len(detector.fired) <= 2 * base.STATE_SUBJECTS_MAX
    # A key seen recently is still remembered: no second alert for it.
    last = f"k-{spray - 1}"
    assert (
        detector.observe(denied(T0 + spray * 0.01, "credential.cert_missing", key=last), FACTS)
        == []
    )
