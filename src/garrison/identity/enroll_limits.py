"""Attempt limits for the enrollment endpoint, which is unauthenticated by nature. Pure: the
clock comes in as an argument.

A sliding window per source address and one over everything: a guesser on one address is
stopped at ``ENROLL_ATTEMPTS_PER_SOURCE``, a guesser spread over many at
``ENROLL_ATTEMPTS_GLOBAL`` (codes carry 256 bits, so the limits only keep the endpoint cheap
and the log readable; they do not make a code guessable).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

# Window over which attempts are counted.
ENROLL_WINDOW_S = 600.0
# A person enrolls once, retyping a code a few times at most.
ENROLL_ATTEMPTS_PER_SOURCE = 10
# Everyone together: a busy onboarding day is a few dozen enrollments in ten minutes.
ENROLL_ATTEMPTS_GLOBAL = 100
# Source addresses remembered at once (the oldest is forgotten first): bounds memory under a
# spray from many addresses, which the global limit stops anyway.
ENROLL_SOURCES_MAX = 10_000
# An IPv6 source is counted by its /64: one host commonly holds a whole /64 and can rotate
# through it, which would make the per-source limit no limit (and let one guesser spend the
# global budget everyone else enrolls with).
ENROLL_IPV6_SOURCE_PREFIX = 64


def source_key(source: str) -> str:
    """The bucket an address is counted in: an IPv4 address (IPv4-mapped IPv6 unwrapped)
    as itself, an IPv6 address by its /64; anything unparseable as given."""
    try:
        ip = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/{ENROLL_IPV6_SOURCE_PREFIX}", strict=False))
    return str(ip)


class EnrollLimiter:
    """``overall`` None: no budget shared by everyone (where nothing can be guessed, such a
    budget only lets a few addresses shut the endpoint for all)."""

    def __init__(
        self,
        *,
        per_source: int = ENROLL_ATTEMPTS_PER_SOURCE,
        overall: int | None = ENROLL_ATTEMPTS_GLOBAL,
        window_s: float = ENROLL_WINDOW_S,
    ) -> None:
        self.per_source = per_source
        self.overall = overall
        self.window_s = window_s
        self._sources: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    @staticmethod
    def _trim(times: deque[float], since: float) -> None:
        while times and times[0] <= since:
            times.popleft()

    def allow(self, source: str, now: float) -> bool:
        """Count one attempt from ``source``; False when a limit is already reached."""
        source = source_key(source)
        since = now - self.window_s
        self._trim(self._all, since)
        times = self._sources.get(source)
        if times is None:
            times = deque()
            self._sources[source] = times
            while len(self._sources) > ENROLL_SOURCES_MAX:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        self._trim(times, since)
        if len(times) >= self.per_source:
            return False
        if self.overall is not None:
            if len(self._all) >= self.overall:
                return False
            self._all.append(now)
        times.append(now)
        return True
