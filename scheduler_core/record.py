"""Frozen records: checked like frozen dataclasses, built without generating code.

Python 3.11 makes a dataclass by writing its methods' source and compiling it as the class is
defined: about half a millisecond a frozen class. With forty of them that was a fifth of the
daemon's start and of every command's (more on a slow board). A `Record` subclass reads its
fields once, from its own annotations, and shares the methods written here, compiled with this
module; mypy checks its construction and its frozen fields as a dataclass's
(`dataclass_transform`).

A subclass gets: `Name(a, b=...)` with its annotations' defaults (a base record's fields first),
fields that cannot be set or deleted, equality and hash by type and fields, a dataclass's repr,
`match` by position, and NamedTuple's `_fields`, `_replace` and `_asdict` (shallow), as
`TaskSpec` and `TaskState` have. There is no `field()`, no `__post_init__` and no mutable
default: a class that needs them stays a dataclass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Self, dataclass_transform


@dataclass_transform(frozen_default=True)
class Record:
    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _defaults: ClassVar[dict[str, object]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        fields, defaults = list(cls._fields), dict(cls._defaults)
        for name, kind in vars(cls).get("__annotations__", {}).items():
            if str(kind).startswith(("ClassVar", "typing.ClassVar")):
                continue
            if name in vars(cls):
                default = vars(cls)[name]
                if isinstance(default, list | dict | set):
                    raise TypeError(f"{cls.__name__}.{name}: a mutable default is shared")
                defaults[name] = default
            elif defaults:
                raise TypeError(f"{cls.__name__}.{name}: a field without a default follows one")
            if name not in fields:
                fields.append(name)
        cls._fields, cls._defaults = tuple(fields), defaults
        type.__setattr__(cls, "__match_args__", cls._fields)

    def __init__(self, *args: object, **kwargs: object) -> None:
        fields = self._fields
        if len(args) > len(fields):
            raise TypeError(f"{self._name()}() takes {len(fields)} arguments, {len(args)} given")
        given = dict(zip(fields, args, strict=False))
        for name, value in kwargs.items():
            if name not in fields or name in given:
                raise TypeError(f"{self._name()}() got an unexpected or repeated argument {name!r}")
            given[name] = value
        missing = [f for f in fields if f not in given and f not in self._defaults]
        if missing:
            raise TypeError(f"{self._name()}() missing required argument(s): {', '.join(missing)}")
        vars(self).update({f: given[f] if f in given else self._defaults[f] for f in fields})

    def _name(self) -> str:
        return type(self).__qualname__

    if not TYPE_CHECKING:  # mypy would take a __setattr__ to allow setting any name

        def __setattr__(self, name: str, value: object) -> None:
            raise AttributeError(f"cannot assign to field {name!r} of a frozen {self._name()}")

        def __delattr__(self, name: str) -> None:
            raise AttributeError(f"cannot delete field {name!r} of a frozen {self._name()}")

    def _astuple(self) -> tuple[object, ...]:
        return tuple(vars(self)[f] for f in self._fields)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Record)
        return self._astuple() == other._astuple()

    def __hash__(self) -> int:
        return hash(self._astuple())

    def __repr__(self) -> str:
        values = ", ".join(f"{f}={vars(self)[f]!r}" for f in self._fields)
        return f"{type(self).__qualname__}({values})"

    def _asdict(self) -> dict[str, Any]:
        return {f: vars(self)[f] for f in self._fields}

    def _replace(self, **changes: Any) -> Self:
        return type(self)(**(self._asdict() | changes))
