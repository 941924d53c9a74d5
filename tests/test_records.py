"""chalicelib.domain.records.NamedTuple makes the classes typing.NamedTuple makes (docs/performance.md)."""

from __future__ import annotations

import importlib
import pickle
import typing

import pytest

from chalicelib.domain import records

MODULES = (
    "chalicelib.adapters.state",
    "chalicelib.domain.cells",
    "chalicelib.domain.config",
    "chalicelib.domain.decisions",
    "chalicelib.domain.events",
    "chalicelib.domain.images",
    "chalicelib.domain.layout",
    "chalicelib.domain.model",
    "chalicelib.domain.schedules",
    "chalicelib.usecases.requests",
    "chalicelib.usecases.transitions",
)


def _define(base: typing.Any) -> type:
    class Sample(base):  # type: ignore[misc, valid-type]
        """A sample record."""

        name: str
        count: int = 0
        tags: tuple[str, ...] = ()

        @property
        def label(self) -> str:
            return f"{self.name}:{self.count}"

        @classmethod
        def parse(cls, text: str) -> Sample:
            name, count = text.split(":")
            return cls(name, int(count))

        def bumped(self) -> Sample:
            return self._replace(count=self.count + 1)

    return Sample


def test_the_same_class_as_typing_namedtuple() -> None:
    ours, theirs = _define(records.NamedTuple), _define(typing.NamedTuple)
    assert ours.__mro__[1:] == theirs.__mro__[1:] == (tuple, object)
    for attribute in ("_fields", "_field_defaults", "__doc__", "__qualname__", "__module__", "__match_args__"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert list(ours.__annotations__) == list(theirs.__annotations__) == ["name", "count", "tags"]
    assert {k for k in vars(theirs) if not k.startswith("__")} <= set(vars(ours))
    a, b = ours("x", 2), theirs("x", 2)
    assert a == b == ("x", 2, ())
    assert (repr(a), a.label, a.bumped(), a._asdict()) == (repr(b), b.label, b.bumped(), b._asdict())
    assert ours.parse("y:3") == ("y", 3, ()) and isinstance(ours.parse("y:3"), ours)
    assert ours._make(["z", 1, ("t",)]) == ("z", 1, ("t",))
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.name = "other"  # type: ignore[misc]


def test_refuses_what_typing_namedtuple_refuses() -> None:
    with pytest.raises(TypeError, match="Non-default namedtuple field"):

        class Bad(records.NamedTuple):
            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="Cannot overwrite NamedTuple attribute _replace"):

        class Worse(records.NamedTuple):
            a: int

            def _replace(self) -> None:  # type: ignore[override]
                pass


@pytest.mark.parametrize("module", MODULES)
def test_the_records_are_namedtuples(module: str) -> None:
    defined = importlib.import_module(module)
    found = [
        v for v in vars(defined).values() if isinstance(v, type) and v.__module__ == module and hasattr(v, "_fields")
    ]
    assert found
    for record in found:
        assert record.__bases__ == (tuple,)
        assert tuple(record.__annotations__) == record._fields
        assert set(record._field_defaults) <= set(record._fields)
        assert pickle.loads(pickle.dumps(record._make(range(len(record._fields))))) == tuple(range(len(record._fields)))
