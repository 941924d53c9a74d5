"""A start that races the delete of an earlier stack of its name never waits for an event already gone.

An ending deletes the previous version's stack, then drains the queue: the request it starts may be of
that very version (a request bringing it back), whose stack name is still ``DELETE_IN_PROGRESS``. Two
windows, found by ``tests/e2e/test_concurrency.py`` under load (the queued promotion never started):
- the create is refused (the name is taken), then the describe finds nothing: the delete finished in
  between, and its ``DELETE_COMPLETE`` found nothing waiting. The name is free: create again.
- the describe finds the stack being deleted, the promotion parks for it, but the ``DELETE_COMPLETE``
  was handled before the waiting entry was written. Look again after parking: gone, so admit now.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain.model import Stage
from chalicelib.domain.names import Version
from tests.flow import Pipeline
from tests.test_sweep_stuck import QA, V2, v1_running  # noqa: F401


class Scripted:
    """The stack adapter's create and describe, answering from a script before the real calls."""

    def __init__(self, p: Pipeline, creates: list[Any], describes: list[Any]) -> None:
        self.stacks = p.deps.stacks
        self.real_create, self.real_describe = self.stacks.create, self.stacks.describe
        self.creates, self.describes = creates, describes
        self.calls: list[str] = []
        self.stacks.create = self.create  # type: ignore[method-assign]
        self.stacks.describe = self.describe  # type: ignore[method-assign]

    def create(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append("create")
        return self.creates.pop(0) if self.creates else self.real_create(*args, **kwargs)

    def describe(self, name: str) -> Any:
        self.calls.append("describe")
        return self.describes.pop(0) if self.describes else self.real_describe(name)

    def restore(self) -> None:
        self.stacks.create, self.stacks.describe = self.real_create, self.real_describe  # type: ignore[method-assign]


def _started(p: Pipeline) -> None:
    promotion = p.promotion()
    assert promotion is not None and promotion.version.value == V2 and promotion.stage is Stage.RESTORING
    assert f"xy-0146-qa-db-{V2}" in p.stacks(), p.stacks()
    assert p.deps.store.waiting() == []


def test_a_name_freed_between_create_and_describe_is_created_again(v1_running: Pipeline) -> None:  # noqa: F811 (the fixture)
    scripted = Scripted(v1_running, creates=[None], describes=[None])
    try:
        result = v1_running.request("qa", V2)
    finally:
        scripted.restore()
    assert result["action"] == "start", result
    assert scripted.calls == ["create", "describe", "create"]
    _started(v1_running)


def test_a_delete_that_completed_before_the_promotion_parked_admits_it(v1_running: Pipeline) -> None:  # noqa: F811 (the fixture)
    name = f"xy-0146-qa-db-{V2}"
    deleting = {
        "StackName": name,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/earlier/1",
        "StackStatus": "DELETE_IN_PROGRESS",
        "Tags": [{"Key": k, "Value": v} for k, v in QA.tags(Version(V2), **{"tierlift:promotion": "earlier"}).items()],
    }
    scripted = Scripted(v1_running, creates=[None], describes=[deleting, None])
    try:
        v1_running.request("qa", V2)
    finally:
        scripted.restore()
    assert scripted.calls[:4] == ["create", "describe", "describe", "create"], scripted.calls
    _started(v1_running)
