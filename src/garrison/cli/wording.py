"""The admin API's validation messages, said in the CLI user's terms.

The server names request fields and speaks pydantic (``expires_in_s: Input should be less
than or equal to 7776000``); the person at the terminal typed ``--expires-in 100d``. This
turns each ``field: problem`` part of a message into ``--option: problem`` in plain words
(``--expires-in: at most 90 days``). A part it does not recognise passes unchanged.
"""

from __future__ import annotations

import re

# Request field → the option that sets it.
FIELD_OPTIONS = {
    "expires_in_s": "--expires-in",
    "grace_s": "--grace",
    "ttl_s": "--ttl",
    "duration_s": "--for",
    "since": "--since",
    "at": "--at",
    "contract_start": "--contract-start",
    "contract_end": "--contract-end",
    "security_review_at": "--security-review",
    "seat_limit": "--seats",
    "agreement_ref": "--agreement",
    "ceiling": "--ceiling",
    "ceiling_compartments": "--ceiling-compartment",
    "compartments": "--compartment",
    "networks": "--network",
    "roles": "--role",
    "clearance": "--clearance",
    "upstream_url": "--upstream-url",
    "upstream_model": "--upstream-model",
    "upstream_key": "--upstream-key-env",
    "auth_style": "--auth",
    "api": "--api",
    "level": "--level",
    "reason": "--reason",
    "note": "--note",
    "title": "--title",
    "sponsor": "--sponsor",
    "principal": "--principal",
    "address": "--from",
    "kind": "--kind",
}

_PART = re.compile(r"^(?P<field>[a-z_]+)(?P<index>(?:\.\d+)*): (?P<problem>.+)$")
_BOUND = re.compile(
    r"^Input should be (?P<how>less than or equal to|less than|greater than or equal to|"
    r"greater than) (?P<value>-?[\d.e+]+)$"
)
_LENGTH = re.compile(
    r"^(?:String|List) should have at (?P<how>most|least) (?P<n>\d+) (?P<unit>\w+)"
)
_CHOICE = re.compile(r"^Input should be (?P<options>'[^']*'(?:, '[^']*')*(?: or '[^']*')?)$")
_HOW = {
    "less than or equal to": "at most",
    "less than": "less than",
    "greater than or equal to": "at least",
    "greater than": "more than",
}
_UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def duration_words(seconds: float) -> str:
    """7776000 → '90 days'; 5400 → '90 minutes'; 0 → '0 seconds'."""
    for size, unit in _UNITS:
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} seconds"


def _problem(field: str, problem: str) -> str:
    bound = _BOUND.match(problem)
    if bound:
        value = float(bound["value"])
        said = duration_words(value) if field.endswith("_s") else f"{value:g}"
        return f"{_HOW[bound['how']]} {said}"
    length = _LENGTH.match(problem)
    if length:
        return f"at {length['how']} {length['n']} {length['unit']}"
    choice = _CHOICE.match(problem)
    if choice:
        options = re.findall(r"'([^']*)'", choice["options"])
        return "one of " + ", ".join(options)
    if problem.startswith("Value error, "):
        return problem.removeprefix("Value error, ")
    if problem == "Field required":
        return "required"
    if problem == "Extra inputs are not permitted":
        return "not accepted here"
    return problem


def humane(message: str) -> str:
    """The server's message with every recognised ``field: problem`` said in CLI terms."""
    parts = []
    for part in message.split("; "):
        found = _PART.match(part)
        if found is None or found["field"] not in FIELD_OPTIONS:
            parts.append(part)
            continue
        option = FIELD_OPTIONS[found["field"]]
        parts.append(f"{option}: {_problem(found['field'], found['problem'])}")
    return "; ".join(parts)
