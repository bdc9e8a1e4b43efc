"""The lock files cover what pyproject.toml asks for: a dependency added to pyproject.toml
without `make lock` would make `make run`/`make test` (and the container build) fail with
--require-hashes, or install an unpinned package. Versions are `make lock`'s business."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    """The normalised project name of a PEP 508 requirement."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert name is not None, requirement
    return re.sub(r"[-_.]+", "-", name.group(1)).lower()


def _pinned(lock: str) -> set[str]:
    text = (ROOT / "requirements" / lock).read_text()
    return {_name(line) for line in text.splitlines() if re.match(r"^[A-Za-z0-9]", line)}


def _project() -> dict[str, list[str]]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": data["dependencies"], **data["optional-dependencies"]}


def test_the_run_lock_pins_every_run_time_dependency() -> None:
    missing = {_name(r) for r in _project()[""]} - _pinned("run.txt")
    assert missing == set(), f"run `make lock`: requirements/run.txt lacks {sorted(missing)}"


def test_the_test_lock_pins_every_dependency_make_test_installs() -> None:
    wanted = {_name(r) for extra in ("", "dev", "llama") for r in _project()[extra]}
    missing = wanted - _pinned("test.txt")
    assert missing == set(), f"run `make lock`: requirements/test.txt lacks {sorted(missing)}"


def test_a_missing_pin_is_noticed() -> None:
    assert "joserfc" in _pinned("run.txt")
    assert "no-such-project" not in _pinned("run.txt")
