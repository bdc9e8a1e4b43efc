"""Enough file descriptors for the configured concurrency, decided at start.

A call in flight holds two sockets (the client's and the upstream's). With the common
default soft limit of 1,024 descriptors a gateway serves ~500 streams and then fails every
call — and before that the audit writer itself cannot open its files. At start the process
raises its soft limit to the hard limit (allowed without privileges) and says loudly when
even that cannot carry ``max_concurrent_requests`` with the reserve below.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("garrison.gateway")

# Descriptors each call in flight holds: the client's socket and the upstream's.
FDS_PER_CALL = 2
# Kept free beyond the calls: the database, its WAL and shared memory, the audit writer's
# connection, the witness and exporters, the admin API, health checks and the snapshot probe.
FD_RESERVE = 256


@dataclass(frozen=True, slots=True)
class FdPlan:
    soft: int  # the soft limit to set (RLIM_INFINITY: no limit)
    needed: int  # descriptors the configured concurrency needs, with the reserve
    max_calls: int  # calls in flight that fit beside the reserve (<= the configured cap)

    @property
    def enough(self) -> bool:
        return self.soft == resource.RLIM_INFINITY or self.soft >= self.needed


def plan(soft: int, hard: int, max_concurrent: int) -> FdPlan:
    """Pure: the soft limit to set, given the current limits and the configured concurrency.

    The soft limit goes up to the hard limit (``RLIM_INFINITY``: up to what is needed). When
    even that is short, fewer calls are admitted so the reserve stays free: past the cap a
    call gets a clean 503, and the audit log and the admin API keep working."""
    needed = max_concurrent * FDS_PER_CALL + FD_RESERVE
    infinite = resource.RLIM_INFINITY
    if soft == infinite:
        target = soft
    elif hard == infinite:
        target = max(soft, needed)
    else:
        target = max(soft, hard)
    if target == infinite:
        max_calls = max_concurrent
    else:
        max_calls = max(0, min(max_concurrent, (target - FD_RESERVE) // FDS_PER_CALL))
    return FdPlan(soft=target, needed=needed, max_calls=max_calls)


def ensure(max_concurrent: int) -> FdPlan:
    """Raise the soft descriptor limit as far as the hard limit allows; warn if short."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    chosen = plan(soft, hard, max_concurrent)
    if chosen.soft != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (chosen.soft, hard))
            log.info("file descriptor limit raised from %d to %d", soft, chosen.soft)
        except (ValueError, OSError) as exc:
            log.error("could not raise the file descriptor limit from %d: %s", soft, exc)
            chosen = plan(soft, soft, max_concurrent)
    if not chosen.enough:
        log.error(
            "FILE DESCRIPTOR LIMIT TOO LOW: %d allowed, %d needed for max_concurrent_requests=%d "
            "(%d per call + %d reserve). Raise the hard limit (systemd LimitNOFILE=, "
            "docker --ulimit nofile=, ulimit -Hn) or lower [limits] max_concurrent_requests. "
            "Admitting at most %d calls at once (503 past it) to keep the reserve free.",
            chosen.soft,
            chosen.needed,
            max_concurrent,
            FDS_PER_CALL,
            FD_RESERVE,
            chosen.max_calls,
        )
    return chosen
