"""Which Lambda invocation is running: the owner recorded on every step a handler claims.

Lambda retries an asynchronous invocation with the same ``aws_request_id``, while a duplicate delivery
is a separate invocation with its own id. A claim owned by the current id was therefore left by a
crashed attempt of this very invocation and may be taken over at once; a claim owned by another id is
someone else's work in progress (see ``docs/architecture.md``, exclusive transitions).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[str | None] = ContextVar("tierlift_invocation", default=None)


def current_id() -> str:
    """The running invocation's id; outside a handler, a fresh id per call site is not wanted, so one is set."""
    value = _current.get()
    if value is None:
        value = f"local-{uuid.uuid4()}"
        _current.set(value)
    return value


@contextmanager
def invocation(request_id: str | None) -> Iterator[str]:
    """Run the body as invocation ``request_id`` (a new id when None)."""
    value = request_id or f"local-{uuid.uuid4()}"
    token = _current.set(value)
    try:
        yield value
    finally:
        _current.reset(token)
