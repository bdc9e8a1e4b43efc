"""Red team (issue 17, the detection worker): an outsider spraying made-up keys (or source
addresses) makes one refusal subject each. The stored state was bounded
(``STATE_SUBJECTS_MAX``), but the detector's own memory kept every subject ever refused,
so the one elected worker that sees the whole organisation's traffic grew without end (and
each state save sorted all of it)."""

from __future__ import annotations

from garrison.detect import base, refusals
from tests.detect.test_detectors import FACTS, T0, denied, make


def test_a_spray_of_made_up_keys_leaves_the_refusal_detector_bounded() -> None:
    detector = make("refusal_burst", window=60, threshold=5)
    spray = 3 * base.STATE_SUBJECTS_MAX
    for n in range(spray):
        # One refusal per made-up key, 10 ms apart: 600 s of spray through a 60 s window.
        detector.observe(denied(T0 + n * 0.01, "credential.unknown", key=f"k-spray-{n}"), FACTS)
        # Bounded at every step (forgetting is amortised: twice the stored bound at most).
        assert len(detector.times) <= 2 * base.STATE_SUBJECTS_MAX


def test_a_spray_inside_one_window_keeps_the_newest_subjects() -> None:
    detector = make("refusal_burst", window=86400, threshold=3)
    spray = 2 * base.STATE_SUBJECTS_MAX + 10
    for n in range(spray):
        detector.observe(denied(T0 + n * 0.001, "credential.unknown", key=f"k-{n}"), FACTS)
    assert len(detector.times) <= 2 * base.STATE_SUBJECTS_MAX
    # A real burst from a key still fires after the spray.
    found = []
    for n in range(3):
        found += detector.observe(denied(T0 + 100 + n, "x.other", key="k-alice"), FACTS)
    assert [f.subject_id for f in found] == ["k-alice"]


def test_guessing_keys_with_a_fresh_key_id_each_time_is_still_a_burst() -> None:
    detector = make("refusal_burst", window="1m", threshold=20)
    guesses = [
        denied(
            T0 + i,
            "credential.unknown",
            status=401,
            key=None,
            principal=None,
            presented=f"k-guess-{i}",
            address="198.51.100.9",
        )
        for i in range(50)
    ]
    found = [f for g in guesses for f in detector.observe(g, FACTS)]
    assert found, "50 refused guesses from one address in 50 s went unnoticed"
    (f,) = found  # once per crossing
    assert (f.subject_kind, f.subject_id, f.reason) == (
        "address",
        "198.51.100.9",
        refusals.REFUSALS_ADDRESS_BURST,
    )
    assert f.evidence == tuple(g.index for g in guesses[:20])
    # The guessed ids are not the caller's credential: the alert names none.
    assert f.credential_id is None


def test_guesses_with_fresh_key_ids_from_fresh_addresses_leave_the_detector_bounded() -> None:
    """Each unauthenticated refusal now makes two subjects (its key id and its address): the
    one bound still holds."""
    detector = make("refusal_burst", window=86400, threshold=3)
    spray = 2 * base.STATE_SUBJECTS_MAX
    for n in range(spray):
        address = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        guess = denied(
            T0 + n * 0.001,
            "credential.unknown",
            status=401,
            key=None,
            principal=None,
            presented=f"k-guess-{n}",
            address=address,
        )
        assert detector.observe(guess, FACTS) == []
        assert len(detector.times) <= 2 * base.STATE_SUBJECTS_MAX
    assert len(detector.state()) <= base.STATE_SUBJECTS_MAX


def test_authenticated_refusals_do_not_count_against_their_address() -> None:
    """People behind one NAT refused by policy are separate keys, not one address burst."""
    detector = make("refusal_burst", window="1m", threshold=5)
    stream = [
        denied(T0 + i, "model.not_allowed", key=key, address="10.9.9.9")
        for i, key in enumerate(["k-alice", "k-bob", "k-vic", "k-vera"] * 2)
    ]
    assert [f for o in stream for f in detector.observe(o, FACTS)] == []
