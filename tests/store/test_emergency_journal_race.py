"""Attack: lose an emergency lock by placing two at once.

Placing read the journal, picked the first free slot and wrote it, with nothing held in
between: two admin requests (each placed in its own worker thread) or two gateway processes
on one data directory placing at the same moment took the same slot, and one lock was
overwritten. It had been acknowledged and enforced in memory, was never folded into the
database, and stopped being enforced once the outage ended.
"""

from __future__ import annotations

import threading
from pathlib import Path

from garrison.store.emergency_locks import EmergencyJournal


def test_locks_placed_at_the_same_moment_each_get_their_own_slot(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    # Two processes' views of one journal file, four threads each, several rounds.
    journals = [EmergencyJournal(path), EmergencyJournal(path)]
    journals[0].preallocate()
    placed = 0
    for _ in range(4):
        barrier = threading.Barrier(8)

        def place(n: int, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            journals[n % 2].place({"id": f"lck_{n}_{threading.get_ident()}"})

        threads = [threading.Thread(target=place, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        placed += 8
    pending = journals[1].pending()
    assert len(pending) == placed
    assert len({slot for slot, _ in pending}) == placed
