"""Tests for ``garrison.errors``: the class tree in the module docstring is the truth."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
import pytest

from garrison import errors
from garrison.errors import GarrisonError

_LINE = re.compile(r"^(?P<prefix>[ │├└─]*)(?P<name>[A-Z][A-Za-z]+)(?:\s+(?P<text>.*))?$")
_STATUS = re.compile(r"^(?P<status>[1-5]\d\d)\b")
_RANGE = re.compile(r"\((?P<digit>[1-5])xx\)")


@dataclass(frozen=True)
class Node:
    name: str
    parent: str | None
    status: int | None
    status_class: int | None


def tree_lines(doc: str) -> list[str]:
    """The block of the docstring that starts at the ``GarrisonError`` root line."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "GarrisonError")
    block: list[str] = []
    for line in lines[start:]:
        if not line.strip():
            break
        block.append(line)
    return block


def parse_tree(doc: str) -> dict[str, Node]:
    """Each line's name, its parent (by indentation) and the status written after it."""
    nodes: dict[str, Node] = {}
    stack: list[tuple[int, str]] = []
    for line in tree_lines(doc):
        match = _LINE.match(line)
        if match is None:
            raise AssertionError(f"unreadable line in the error tree: {line!r}")
        depth = len(match.group("prefix"))
        text = (match.group("text") or "").strip()
        status = _STATUS.match(text)
        status_class = _RANGE.search(text)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        nodes[match.group("name")] = Node(
            name=match.group("name"),
            parent=stack[-1][1] if stack else None,
            status=int(status.group("status")) if status else None,
            status_class=int(status_class.group("digit")) if status_class else None,
        )
        stack.append((depth, match.group("name")))
    return nodes


TREE = parse_tree(errors.__doc__ or "")
CLASSES: dict[str, type[GarrisonError]] = {
    name: obj
    for name, obj in vars(errors).items()
    if isinstance(obj, type) and issubclass(obj, GarrisonError)
}


def test_docstring_tree_is_parsed() -> None:
    assert TREE["GarrisonError"].parent is None
    assert len(TREE) >= 10


def test_tree_lists_every_error_class() -> None:
    assert set(CLASSES) <= set(TREE)


def test_tree_lists_no_class_that_does_not_exist() -> None:
    assert set(TREE) <= set(CLASSES)


@pytest.mark.parametrize("name", sorted(n for n in TREE if TREE[n].status is not None))
def test_class_status_is_the_one_in_the_tree(name: str) -> None:
    assert CLASSES[name].status == TREE[name].status


@pytest.mark.parametrize("name", sorted(n for n in TREE if TREE[n].status_class is not None))
def test_branch_status_is_in_the_class_the_tree_gives(name: str) -> None:
    assert CLASSES[name].status // 100 == TREE[name].status_class


@pytest.mark.parametrize("name", sorted(n for n in TREE if TREE[n].status_class is not None))
def test_every_class_under_a_branch_has_a_status_in_its_class(name: str) -> None:
    branch = CLASSES[name]
    digit = TREE[name].status_class
    assert all(cls.status // 100 == digit for cls in CLASSES.values() if issubclass(cls, branch))


@pytest.mark.parametrize("name", sorted(n for n in TREE if TREE[n].parent is not None))
def test_class_subclasses_its_parent_in_the_tree(name: str) -> None:
    assert CLASSES[name].__bases__ == (CLASSES[TREE[name].parent or ""],)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_every_class_has_its_own_code(name: str) -> None:
    assert "code" in vars(CLASSES[name]) and CLASSES[name].code


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_default_public_message_is_the_class_default(name: str) -> None:
    cls = CLASSES[name]
    assert cls("operator detail").public_message == cls.default_message


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_detail_never_becomes_the_public_message(name: str) -> None:
    assert "secret-detail" not in CLASSES[name]("secret-detail").public_message


def test_public_message_can_be_set() -> None:
    assert errors.BadRequest("x", public_message="Field 'model' is required.").public_message == (
        "Field 'model' is required."
    )


def test_str_of_an_error_without_detail_is_the_default_message() -> None:
    assert str(errors.NotFound()) == errors.NotFound.default_message


# ── the rule an error names ────────────────────────────────────────────────────────────────
def test_an_error_raised_for_a_rule_carries_its_code_and_names_it_in_its_message() -> None:
    exc = errors.BadRequest("the vendor's contract has ended", rule="vendor-contract")
    assert exc.rule == "vendor-contract"
    assert exc.detail == "rule vendor-contract: the vendor's contract has ended"
    assert errors.BadRequest("plain").rule is None


def test_the_admin_wire_reads_the_rule_from_the_error_not_its_message() -> None:
    from garrison.admin_wire import admin_error_body

    ruled = orjson.loads(admin_error_body(errors.Conflict("again", rule="two-person"), "req_1"))
    assert ruled == {
        "error": {
            "type": "conflict",
            "message": "rule two-person: again",
            "rule": "two-person",
            "request_id": "req_1",
        }
    }
    # Text that merely looks like a rule (a name the caller chose) is not one.
    lookalike = errors.BadRequest("no such principal 'rule owner: x'")
    assert orjson.loads(admin_error_body(lookalike))["error"]["rule"] is None
    # A server error never names a rule to the caller, whatever it carries.
    hidden = errors.ServerError("broke", rule="two-person")
    body = orjson.loads(admin_error_body(hidden))["error"]
    assert body["rule"] is None and body["message"] == "Internal error."
