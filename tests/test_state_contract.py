"""One contract, two stores: the in-memory twin and SSM (on moto) pass the same cases.

The port (:class:`chalicelib.domain.ports.Parameters`) promises SSM's semantics, and the fast tests that
run on :class:`chalicelib.adapters.memory.MemoryParameters` are only worth what that promise is: create-only
writes (the one atomic write SSM has), overwrite by the owner, listings by path with their write time, batch
deletes of more than SSM's 10 names per call, and exactly one winner among concurrent creates. The same
cases then run one level up, through :class:`StateStore`: the lock, the state records, the verification
read, a record that round-trips.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.adapters.memory import MemoryParameters
from chalicelib.adapters.ssm import SsmParameters
from chalicelib.adapters.state import StateStore
from chalicelib.domain.model import Completed, EnvState, LastOutcome, Request
from chalicelib.domain.names import Namespace

NS = Namespace.parse("xy-0146-qa")


@pytest.fixture(params=["memory", "ssm"])
def parameters(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryParameters()
        return
    aws: boto3.session.Session = request.getfixturevalue("aws")
    yield SsmParameters(aws.client("ssm"))


def test_create_is_create_only_and_put_overwrites(parameters: Any) -> None:
    assert parameters.create("/t/a", "1") is True
    assert parameters.create("/t/a", "2") is False
    assert parameters.get("/t/a") == "1"
    parameters.put("/t/a", "3")
    assert parameters.get("/t/a") == "3"
    assert parameters.get("/t/missing") is None


def test_get_many_returns_only_what_exists(parameters: Any) -> None:
    parameters.create("/t/a", "1")
    parameters.create("/t/b", "2")
    assert parameters.get_many(["/t/a", "/t/b", "/t/c"]) == {"/t/a": "1", "/t/b": "2"}


def test_list_by_path_recursive_or_not_with_write_times(parameters: Any) -> None:
    for name in ("/t/x/a", "/t/x/b/c", "/t/y/a", "/tother/a"):
        parameters.create(name, name)
    deep = parameters.list("/t/x")
    assert sorted(deep) == ["/t/x/a", "/t/x/b/c"]
    assert all(when is not None for _, when in deep.values())
    assert sorted(parameters.list("/t/x", recursive=False)) == ["/t/x/a"]
    assert sorted(parameters.list("/t")) == ["/t/x/a", "/t/x/b/c", "/t/y/a"]  # not /tother


def test_delete_and_batch_delete_past_ten_names(parameters: Any) -> None:
    names = [f"/t/n/{i:02d}" for i in range(23)]
    for name in names:
        parameters.create(name, "v")
    assert parameters.delete(names[0]) is True
    assert parameters.delete(names[0]) is False
    assert parameters.delete_many([*names, "/t/n/none"]) == 22
    assert parameters.list("/t/n") == {}


def test_concurrent_creates_have_exactly_one_winner(parameters: Any) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(6)

    def create(value: str) -> None:
        barrier.wait(timeout=5)
        results.append(parameters.create("/t/lock", value))

    threads = [threading.Thread(target=create, args=(str(i),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 5 + [True]


# one level up: the state store over either -------------------------------------------------------------
def request(rid: str) -> Request:
    return Request(id=rid, tenant="xy-0146", environment="qa", version="20261127200000", requested_at="t")


def test_the_lock_has_one_holder_and_verify_reads_it(parameters: Any) -> None:
    store = StateStore(parameters)
    assert store.take_lock(request("p-1")) is True
    assert store.take_lock(request("p-2")) is False
    assert store.verify(NS, "p-1") == ("p-1", False)
    assert store.read(NS).promotion is not None and store.read(NS).promotion.id == "p-1"


def test_a_state_record_is_create_only_and_round_trips(parameters: Any) -> None:
    store = StateStore(parameters)
    state = EnvState(
        seq=1,
        ended="p-1",
        outcome="completed",
        active="20261127200000",
        last=LastOutcome("p-1", "20261127200000", "completed", at="t"),
        completed=(Completed("20261127200000", "r/app@sha256:" + "0" * 64),),
    )
    assert store.create_state(NS, state) is True
    assert store.create_state(NS, state._replace(outcome="failed")) is False
    record = store.read(NS)
    assert record.state == state and record.active is not None and record.active.value == "20261127200000"
    assert record.state.image_of("20261127200000") == "r/app@sha256:" + "0" * 64
    assert store.verify(NS, "p-1") == (None, True)
