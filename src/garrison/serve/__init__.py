"""The moving parts of one running Garrison process, which ``garrison.server`` (the
composition root) builds and starts: the snapshot keeper and its watcher with the contract
clock (``snapshots``), the emergency lock overlay (``emergency``), the instance lease, dead
processes' calls and the disk check (``upkeep``), and draining (``drain``). Nothing outside
``garrison.server`` imports these."""
