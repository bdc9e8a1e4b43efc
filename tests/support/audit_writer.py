"""One audit writer process for the replica tests: ``python -m tests.support.audit_writer
DATABASE_URL KEY_DIR NAME BATCHES BATCH [--checkpoint-each]``.

It opens its own sink (as a gateway replica does), writes ``BATCHES`` batches of ``BATCH``
events named ``NAME-<n>`` (signing a checkpoint whenever one is due, or with
``--checkpoint-each`` after every batch), and after each commit prints
``committed NAME-<last n>`` and flushes: what a test may rely on being in the log even if the
process is then killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from garrison.audit.checkpoint import Signer
from garrison.audit.events import AuditEvent, EventName
from garrison.audit.sinks import open_sink


def main(argv: list[str]) -> None:
    url, key_dir, name, batches, size = argv[0], Path(argv[1]), argv[2], int(argv[3]), int(argv[4])
    checkpoint_each = "--checkpoint-each" in argv[5:]
    sink = open_sink(url, signer=Signer.from_dir(key_dir))
    sink.open()
    n = 0
    for _ in range(batches):
        events = []
        for _ in range(size):
            events.append(
                AuditEvent(EventName.REQUEST_ALLOWED, at=1000.0 + n, request_id=f"{name}-{n}")
            )
            n += 1
        sink.write_batch(events)
        if checkpoint_each:
            sink.checkpoint()
        print(f"committed {name}-{n - 1}", flush=True)
    sink.close()


if __name__ == "__main__":
    main(sys.argv[1:])
