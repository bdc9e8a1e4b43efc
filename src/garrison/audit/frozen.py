"""A faster ``__init__`` for frozen slotted dataclasses on the data plane's hot path.

The ``__init__`` that ``dataclass(frozen=True)`` writes sets each field with
``object.__setattr__`` (the class's own ``__setattr__`` refuses): about three times what
setting the slot itself costs, and an audit event and its payload are built twice per model
call. ``quick_init`` gives such a class an ``__init__`` with the same signature, defaults
and default factories that sets each slot through its descriptor; the instance is exactly
what the generated one makes, and stays frozen. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

_FACTORY = object()  # the default of a field with a default factory (replaced on the way in)


def quick_init(cls: type[T]) -> type[T]:
    """Replace the generated ``__init__`` of ``cls`` (a ``dataclass(frozen=True,
    slots=True)`` without ``__post_init__`` or ``InitVar``) with one that sets its slots
    directly. Returns ``cls``."""
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not run __post_init__")
    namespace: dict[str, Any] = {"_FACTORY": _FACTORY}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for n, f in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init needs every field in init")
        namespace[f"_set{n}"] = cls.__dict__[f.name].__set__
        if f.default is not dataclasses.MISSING:
            namespace[f"_default{n}"] = f.default
            param = f"{f.name}=_default{n}"
        elif f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{n}"] = f.default_factory
            param = f"{f.name}=_FACTORY"
            body.append(f"    if {f.name} is _FACTORY: {f.name} = _factory{n}()")
        else:
            param = f.name
        (keyword if f.kw_only else positional).append(param)
        body.append(f"    _set{n}(self, {f.name})")
    params = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    exec(f"def __init__({params}) -> None:\n" + "\n".join(body or ["    pass"]), namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - a class attribute set after creation
    return cls
