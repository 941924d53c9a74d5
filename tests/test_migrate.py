"""The one-off migration from the layout before the state record keeps every active version and lock."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.adapters.ssm import SsmParameters
from chalicelib.adapters.state import StateStore
from chalicelib.domain.names import Namespace
from tierlift.migrate import apply, plan

QA, PROD = Namespace.parse("xy-0146-qa"), Namespace.parse("xy-0146-prod")
V1, V2 = "20261120093000", "20261127200000"


def old_layout(ssm: Any) -> None:
    put = lambda name, value: ssm.put_parameter(Name=name, Value=value, Type="String")  # noqa: E731
    put("/tierlift/xy-0146/qa/active", V2)
    put("/tierlift/xy-0146/qa/last", json.dumps({"promotion_id": "p-2", "version": V2, "outcome": "completed"}))
    put("/tierlift/xy-0146/qa/completed", json.dumps([V1, V2]))
    put("/tierlift/xy-0146/qa/db/" + V2, json.dumps({"stack": "s", "endpoint": "e", "port": 3306}))
    for n in range(3):
        put(f"/tierlift/xy-0146/qa/steps/p-2/{n:02d}", "{}")
    put("/tierlift/xy-0146/prod/active", V1)
    lock = {"id": "p-9", "tenant": "xy-0146", "environment": "prod", "version": V2, "requested_at": "t"}
    put("/tierlift/xy-0146/prod/promotion", json.dumps(lock))  # a promotion in flight
    for day in ("20261125020000", "20261126020000"):
        put(f"/tierlift/schedule/xy-0146/{day}", day)


def test_migration_writes_state_records_keeps_locks_and_dbs_and_is_idempotent(aws: Any) -> None:
    ssm = aws.client("ssm")
    old_layout(ssm)
    store = StateStore(SsmParameters(ssm))
    migration = plan(store)
    assert migration.summary() == {"environments": 2, "state_records": ["xy-0146-prod", "xy-0146-qa"], "deletes": 9}
    assert store.read(QA).active is None  # the dry run (plan) wrote nothing
    result = apply(store, migration)
    assert result["written"] == 2
    qa, prod = store.read(QA), store.read(PROD)
    assert qa.active is not None and qa.active.value == V2 and qa.completed == (V1, V2)
    assert qa.last is not None and qa.last.promotion_id == "p-2"
    assert prod.active is not None and prod.active.value == V1
    assert prod.promotion is not None and prod.promotion.id == "p-9"  # the lock is kept
    names = {p["Name"] for p in ssm.get_parameters_by_path(Path="/tierlift", Recursive=True)["Parameters"]}
    assert names == {
        f"/tierlift/xy-0146/qa/db/{V2}",
        "/tierlift/xy-0146/qa/state/migrated.1",
        "/tierlift/xy-0146/prod/promotion",
        "/tierlift/xy-0146/prod/state/migrated.1",
    }
    again = plan(store)
    assert again.summary() == {"environments": 0, "state_records": [], "deletes": 0}
