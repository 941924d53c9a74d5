"""SSM Parameter Store behind the :class:`~chalicelib.domain.ports.Parameters` port.

``create`` is ``PutParameter(Overwrite=False)``, SSM's one atomic write; ``ParameterAlreadyExists``
means someone else wrote first. Reads can be paced by a token bucket (``reads_per_second``): SSM's
``GetParameter``/``GetParameters``/``GetParametersByPath`` share one throughput quota per account and
region (40 per second by default), which the scheduled sweep must leave to the promotions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.state import StateStore
from chalicelib.domain.model import StateFull

GET_PARAMETERS_BATCH = 10
DELETE_PARAMETERS_BATCH = 10


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _full(name: str) -> StateFull:
    """``ParameterLimitExceeded`` as :class:`StateFull`, which the use cases answer."""
    return StateFull(
        f"SSM refused a new parameter ({name}): the parameter limit of this account and region is reached "
        "(10,000 standard parameters); nothing was written. Free parameters or move to the advanced tier "
        "(docs/scale.md), then request again"
    )


class TokenBucket:
    """At most ``rate`` acquisitions per second on average, bursts of ``burst`` (thread-safe)."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                wait = (1 - self._tokens) / self.rate
            self.waited += wait
            self._sleep(wait)


class SsmParameters:
    """boto3's SSM client as a :class:`~chalicelib.domain.ports.Parameters` store."""

    def __init__(self, ssm: Any, *, reads_per_second: float = 0.0) -> None:
        self.client = ssm
        self.bucket = TokenBucket(reads_per_second) if reads_per_second > 0 else None

    def _read(self) -> None:
        if self.bucket is not None:
            self.bucket.acquire()

    def get(self, name: str) -> str | None:
        self._read()
        try:
            return str(self.client.get_parameter(Name=name)["Parameter"]["Value"])
        except ClientError as exc:
            if _code(exc) == "ParameterNotFound":
                return None
            raise

    def get_many(self, names: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for start in range(0, len(names), GET_PARAMETERS_BATCH):
            self._read()
            found = self.client.get_parameters(Names=list(names[start : start + GET_PARAMETERS_BATCH]))
            out.update({p["Name"]: str(p["Value"]) for p in found.get("Parameters", [])})
        return out

    def list(self, path: str, *, recursive: bool = True) -> dict[str, tuple[str, datetime | None]]:
        values: dict[str, tuple[str, datetime | None]] = {}
        kwargs: dict[str, Any] = {"Path": path, "Recursive": recursive}
        while True:
            self._read()
            page = self.client.get_parameters_by_path(**kwargs)
            for param in page.get("Parameters", []):
                values[param["Name"]] = (str(param["Value"]), param.get("LastModifiedDate"))
            token = page.get("NextToken")
            if not token:
                return values
            kwargs["NextToken"] = token

    def create(self, name: str, value: str) -> bool:
        try:
            self.client.put_parameter(Name=name, Value=value, Type="String", Overwrite=False)
        except ClientError as exc:
            if _code(exc) == "ParameterAlreadyExists":
                return False
            if _code(exc) == "ParameterLimitExceeded":
                raise _full(name) from exc
            raise
        return True

    def put(self, name: str, value: str) -> None:
        try:
            self.client.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
        except ClientError as exc:
            if _code(exc) == "ParameterLimitExceeded":
                raise _full(name) from exc
            raise

    def delete(self, name: str) -> bool:
        try:
            self.client.delete_parameter(Name=name)
        except ClientError as exc:
            if _code(exc) == "ParameterNotFound":
                return False
            raise
        return True

    def delete_many(self, names: Iterable[str]) -> int:
        pending = list(dict.fromkeys(names))
        deleted = 0
        for start in range(0, len(pending), DELETE_PARAMETERS_BATCH):
            found = self.client.delete_parameters(Names=pending[start : start + DELETE_PARAMETERS_BATCH])
            deleted += len(found.get("DeletedParameters", []))
        return deleted


def SsmStateStore(ssm: Any, root: str = "/tierlift", *, reads_per_second: float = 0.0) -> StateStore:
    """The state store on SSM Parameter Store (the twin of ``InMemoryStateStore``)."""
    return StateStore(SsmParameters(ssm, reads_per_second=reads_per_second), root)
