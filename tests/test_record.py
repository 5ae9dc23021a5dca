"""Records behave as the frozen dataclasses they replace: construction, frozen fields,
equality by type, hash, repr, `match`, pickling, and NamedTuple's helpers."""

from __future__ import annotations

import copy
import pickle
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest

from commands.command import Pause, Resume, Status
from scheduler_core.model import Cause, Outcome, RunResult
from scheduler_core.record import Record


class Point(Record):
    """A test record."""

    kind: ClassVar[str] = "point"
    x: int
    y: int = 0
    label: str | None = None


class Point3(Point):
    z: int = 0


def test_fields_come_from_annotations_in_order_with_their_defaults() -> None:
    assert Point._fields == ("x", "y", "label")
    assert Point(1) == Point(1, 0, None) == Point(x=1, label=None)
    assert Point(1, label="a").label == "a"
    assert Point3._fields == ("x", "y", "label", "z")
    assert Point3(1, z=3)._asdict() == {"x": 1, "y": 0, "label": None, "z": 3}
    assert Point.kind == "point" and "kind" not in Point(1)._asdict()


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, r"Point\(\) missing required argument\(s\): x"),
        ((1, 2, None, 4), {}, r"Point\(\) takes 3 arguments, 4 given"),
        ((1,), {"x": 2}, "unexpected or repeated argument 'x'"),
        ((1,), {"w": 2}, "unexpected or repeated argument 'w'"),
    ],
)
def test_bad_arguments_are_a_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        Point(*args, **kwargs)


def test_fields_cannot_be_set_or_deleted() -> None:
    p = Point(1)
    with pytest.raises(AttributeError, match="cannot assign to field 'x'"):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError, match="cannot delete field 'x'"):
        del p.x
    with pytest.raises(AttributeError):
        p.other = 1  # type: ignore[attr-defined]
    assert p == Point(1)


def test_equal_only_to_the_same_type_with_the_same_fields() -> None:
    # A NamedTuple would make these equal: both are ("backup",).
    assert Pause("backup") != Resume("backup")
    assert Pause("backup") == Pause("backup") and Pause("backup") != Pause("mail")
    assert Point3(1) != Point(1) and Point(1) != (1, 0, None)
    assert len({Pause("a"), Pause("a"), Resume("a"), Status()}) == 3
    assert hash(Point(1, 2)) == hash(Point(1, 2))


def test_repr_reads_as_a_dataclass() -> None:
    assert repr(Point(1, label="a")) == "Point(x=1, y=0, label='a')"
    assert repr(Status()) == "Status(task=None)"


def test_match_by_position_and_by_name() -> None:
    match Point(1, 2):
        case Point(1, y):
            assert y == 2
        case _:
            pytest.fail("no match")
    match Point3(5, z=7):
        case Point3(x=5, z=z):
            assert z == 7
        case _:
            pytest.fail("no match")


def test_replace_copies_and_pickles() -> None:
    p = Point(1, label="a")
    assert p._replace(y=5) == Point(1, 5, "a") and p == Point(1, label="a")
    with pytest.raises(TypeError):
        p._replace(w=1)
    result = RunResult(
        "t", 3, Cause.SCHEDULE, Outcome.SUCCESS, 0, 0.1, "", "", "ok", datetime.now(UTC)
    )
    for value in (p, Point3(2, z=1), result):
        for again in (pickle.loads(pickle.dumps(value)), copy.copy(value), copy.deepcopy(value)):
            assert again == value and type(again) is type(value)


def test_a_class_that_needs_what_records_lack_is_refused() -> None:
    with pytest.raises(TypeError, match="mutable default"):

        class Bag(Record):
            items: list[int] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="without a default follows"):

        class Late(Record):
            a: int = 0
            b: int  # type: ignore[misc]
