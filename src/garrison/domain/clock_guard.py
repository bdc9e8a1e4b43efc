"""Guard the contract clock against wall-clock jumps (pure: both clocks are passed in).

Contracts end at a wall-clock time, so expiring them needs the wall clock; but a wall clock
stepped forward (a bad NTP source, a VM restored from a snapshot, an operator's typo) would
expire vendors for good. The guard compares the wall clock with the monotonic clock: while
they disagree by more than ``CLOCK_JUMP_LIMIT_S`` against the offset they had when the
process started, expiries pause; they resume once the two have agreed again for
``CLOCK_AGREE_S``. A restart takes the wall clock as it then is (that is how an operator
confirms a new time). Durations and timeouts never read the wall clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# NTP slews at most 0.5 ms per second; a difference of two minutes is a step, not a drift.
CLOCK_JUMP_LIMIT_S = 120.0
# After a jump, how long the clocks must agree again before expiries resume (a flapping
# time source must settle first).
CLOCK_AGREE_S = 300.0


class ClockChange(enum.Enum):
    NONE = "none"
    JUMPED = "jumped"  # expiries pause from now
    AGREED = "agreed"  # expiries resume from now


@dataclass(slots=True)
class ClockGuard:
    offset: float  # wall minus monotonic when the process started
    paused: bool = False
    skew: float = 0.0  # the latest difference from the starting offset, in seconds
    _agree_since: float | None = None

    @classmethod
    def start(cls, wall: float, monotonic: float) -> ClockGuard:
        return cls(offset=wall - monotonic)

    def observe(self, wall: float, monotonic: float) -> ClockChange:
        """Read both clocks; say whether expiries just paused or resumed."""
        self.skew = (wall - monotonic) - self.offset
        if abs(self.skew) > CLOCK_JUMP_LIMIT_S:
            self._agree_since = None
            if not self.paused:
                self.paused = True
                return ClockChange.JUMPED
            return ClockChange.NONE
        if not self.paused:
            return ClockChange.NONE
        if self._agree_since is None:
            self._agree_since = monotonic
        if monotonic - self._agree_since >= CLOCK_AGREE_S:
            self.paused = False
            self._agree_since = None
            return ClockChange.AGREED
        return ClockChange.NONE
