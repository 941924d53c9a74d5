"""``NamedTuple`` for tierlift's records, at a third of ``typing.NamedTuple``'s cost when a class is made.

``class Request(NamedTuple): ...`` with this ``NamedTuple`` makes the same class ``typing.NamedTuple``
makes: ``collections.namedtuple``'s tuple subclass with the annotated fields, their defaults, and the
class body's methods, properties and docstring. What it leaves out is what costs at import and tierlift
never uses: each annotation is kept as written (a string, under ``from __future__ import annotations``)
instead of being compiled into a ``typing.ForwardRef``, the bases are not re-assigned, and there is no
generic ``NamedTuple[T]``. Every Lambda function defines ~30 records when ``app`` is imported, so that
is ~0.4 ms a class of its cold start (docs/performance.md, "Cold start"). mypy sees
``typing.NamedTuple`` itself.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

__all__ = ["NamedTuple"]

if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
else:
    # As typing.NamedTuple: the attributes collections.namedtuple makes are not to be overwritten, and
    # the class body's own names but these are copied onto the record.
    _PROHIBITED = frozenset(
        {"__new__", "__init__", "__slots__", "__getnewargs__", "_fields", "_field_defaults"}
        | {"_make", "_replace", "_asdict", "_source"}
    )
    _SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})

    class _RecordMeta(type):
        def __new__(mcls, typename: str, bases: tuple[type, ...], ns: dict[str, Any]) -> type:
            if bases != (_Record,):
                raise TypeError("a record can only inherit from NamedTuple")
            types = ns.get("__annotations__", {})
            defaults = []
            for name in types:
                if name in ns:
                    defaults.append(ns[name])
                elif defaults:
                    raise TypeError(f"Non-default namedtuple field {name} cannot follow default field(s)")
            record = collections.namedtuple(typename, types, defaults=defaults, module=ns["__module__"])
            record.__annotations__ = record.__new__.__annotations__ = dict(types)
            for key, value in ns.items():
                if key in _PROHIBITED:
                    raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
                if key in _SPECIAL:
                    continue
                if key not in record._fields:
                    setattr(record, key, value)
                set_name = getattr(type(value), "__set_name__", None)
                if set_name is not None:
                    set_name(value, record, key)
            return record

    _Record = type.__new__(_RecordMeta, "NamedTuple", (), {})

    def NamedTuple(typename: str, fields: Any = None, /) -> type:
        raise TypeError("tierlift's NamedTuple is for class definitions only")

    NamedTuple.__mro_entries__ = lambda bases: (_Record,)
