"""The in-memory twin of SSM Parameter Store: the same conditional-write semantics (create-only,
overwrite, batch delete, listing by path with the write time), behind the same port. The contract tests
(``tests/test_state_contract.py``) run the same cases against it and against SSM on moto."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from chalicelib.adapters.state import StateStore


class MemoryParameters:
    """A dict with SSM's semantics. ``hook(operation, name)`` is called before every call (the tests'
    deterministic scheduler parks there, as it does at botocore's hooks for the SSM adapter)."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._values: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.hook: Callable[[str, str], None] | None = None
        self.calls: list[tuple[str, str]] = []

    def _call(self, operation: str, name: str = "") -> None:
        self.calls.append((operation, name))
        if self.hook is not None:
            self.hook(operation, name)

    def get(self, name: str) -> str | None:
        self._call("GetParameter", name)
        with self._lock:
            found = self._values.get(name)
        return found[0] if found else None

    def get_many(self, names: Sequence[str]) -> dict[str, str]:
        self._call("GetParameters", ",".join(names))
        with self._lock:
            return {n: self._values[n][0] for n in names if n in self._values}

    def list(self, path: str, *, recursive: bool = True) -> dict[str, tuple[str, datetime | None]]:
        self._call("GetParametersByPath", path)
        prefix = path.rstrip("/") + "/"
        with self._lock:
            items = list(self._values.items())
        out: dict[str, tuple[str, datetime | None]] = {}
        for name, (value, when) in sorted(items):
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix) :]):
                out[name] = (value, when)
        return out

    def create(self, name: str, value: str) -> bool:
        self._call("PutParameter", name)
        with self._lock:
            if name in self._values:
                return False
            self._values[name] = (value, self._clock())
            return True

    def put(self, name: str, value: str) -> None:
        self._call("PutParameter", name)
        with self._lock:
            self._values[name] = (value, self._clock())

    def delete(self, name: str) -> bool:
        self._call("DeleteParameter", name)
        with self._lock:
            return self._values.pop(name, None) is not None

    def delete_many(self, names: Iterable[str]) -> int:
        pending = list(dict.fromkeys(names))
        deleted = 0
        for start in range(0, len(pending), 10):
            batch = pending[start : start + 10]
            self._call("DeleteParameters", ",".join(batch))
            with self._lock:
                deleted += sum(1 for n in batch if self._values.pop(n, None) is not None)
        return deleted

    def names(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._values))


def InMemoryStateStore(root: str = "/tierlift", clock: Callable[[], datetime] | None = None) -> StateStore:
    """The state store on :class:`MemoryParameters` (the twin of ``StateStore(SsmParameters(...))``)."""
    return StateStore(MemoryParameters(clock), root)
