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


def test_the_names_behave_as_their_frozen_dataclasses_did() -> None:
    import copy
    import dataclasses

    from chalicelib.domain.names import Namespace, Tenant, Version, Versioned

    @dataclasses.dataclass(frozen=True, order=True)
    class Old:
        value: str

    old, new = Old("20261127200000"), Version("20261127200000")
    assert repr(new) == repr(old).replace(
        "test_the_names_behave_as_their_frozen_dataclasses_did.<locals>.Old", "Version"
    )
    assert hash(new) == hash(old) == hash(("20261127200000",))
    later = Version("20261128000000")
    assert new < later and new <= later and later > new and later >= new and not new > later
    assert sorted([later, new]) == [new, later] and max(new, later) == later
    assert new == Version("20261127200000") and new != "20261127200000" and new != old
    with pytest.raises(TypeError):
        _ = new < "20261128000000"  # type: ignore[operator]
    with pytest.raises(dataclasses.FrozenInstanceError):
        new.value = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del new.value  # type: ignore[misc]
    ns = Namespace(Tenant("xy", "0146"), "qa")
    versioned = Versioned(ns, new)
    assert repr(versioned) == (
        "Versioned(namespace=Namespace(tenant=Tenant(customer='xy', project='0146'), environment='qa'),"
        " version=Version(value='20261127200000'))"
    )
    assert str(ns) == "xy-0146-qa" and str(new) == "20261127200000"
    for value in (new, ns, versioned):
        assert pickle.loads(pickle.dumps(value)) == value == copy.deepcopy(value) == copy.copy(value)
        assert hash(copy.deepcopy(value)) == hash(value)
    assert {ns: 1}[Namespace(Tenant("xy", "0146"), "qa")] == 1
    match versioned:
        case Versioned(Namespace(Tenant(customer, _), environment), Version(value)):
            assert (customer, environment, value) == ("xy", "qa", "20261127200000")
        case _:
            raise AssertionError("no match")


def test_layout_and_settings_keep_what_callers_use() -> None:
    import dataclasses

    from chalicelib.domain.layout import Layout
    from chalicelib.settings import DEFAULT_STAGE_TIMEOUTS, Settings

    assert repr(Layout("/x/")) == "Layout(root='/x')" and Layout("/") == Layout() and Layout().root == "/tierlift"
    assert hash(Layout("/x")) == hash(Layout("/x/"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Layout().root = "/y"  # type: ignore[misc]
    settings = Settings()
    assert settings.stage_timeouts == DEFAULT_STAGE_TIMEOUTS and settings.stage_timeouts["restoring"] == 7200
    with pytest.raises(TypeError):
        settings.stage_timeouts["ending"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        settings.grace_seconds = 0  # type: ignore[misc]
    shorter = settings._replace(grace_seconds=0)
    assert (shorter.grace_seconds, settings.grace_seconds, shorter.event_bus) == (0, 3600, "tierlift-dev")
    assert Settings.from_env().stage_timeouts == dict(DEFAULT_STAGE_TIMEOUTS)
