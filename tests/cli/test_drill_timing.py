"""The drill's containment time: taken from refused calls that have finished. A call's status
is set before its end time, so an unfinished refused call (end 0.0) once read as containment
at the epoch (contain_s ≈ -1.8e9 and every hostile call "after containment"): a failed drill
on a gateway that had contained the breach."""

from __future__ import annotations

from garrison.drill import CallRecord, first_refusal


def test_an_unfinished_refusal_is_not_containment() -> None:
    calls = [
        CallRecord("attacker", "127.0.3.1", 100.0, status=200, ended=100.5),
        CallRecord("attacker", "127.0.3.1", 101.0, status=403),  # answered, not ended yet
        CallRecord("staff", "127.0.2.1", 101.0, status=403, ended=101.2),
    ]
    assert first_refusal(calls) is None
    calls[1].ended = 101.4
    calls.append(CallRecord("attacker", "127.0.3.1", 101.1, status=403, ended=101.3))
    assert first_refusal(calls) == 101.3
