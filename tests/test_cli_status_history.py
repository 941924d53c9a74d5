"""``status`` (every tenant on one screen) and ``history`` (the ledger folded per promotion): pure parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.model import Completed, EnvRecord, EnvState
from chalicelib.domain.names import Namespace, Version
from tierlift.cli import rollback_target, snapshot_gone
from tierlift.errors import ExitCode, OperatorError
from tierlift.history import LedgerEvent, fold, parse_since, read_ledger, render_history
from tierlift.output import json_text
from tierlift.status import EnvStatus, render_overview, summary_line

NOW = datetime(2026, 11, 28, 8, 0, 0, tzinfo=UTC)


def env(tenant: str, environment: str, **kw: Any) -> EnvStatus:
    row = EnvStatus(f"{tenant}-{environment}", tenant, environment, active="20261120000000")
    row.active_since = NOW - timedelta(days=3)
    row.snapshot = f"{tenant}-dev-20261120000000"
    row.endpoint = f"{tenant}-{environment}-20261120000000.abc.us-east-1.rds.amazonaws.com"
    for key, value in kw.items():
        setattr(row, key, value)
    return row


def fleet() -> list[EnvStatus]:
    rows = [env(f"t{i:03d}-0001", e) for i in range(1000) for e in ("qa", "prod")]
    rows[1] = env(
        "t000-0001",
        "prod",
        stage="awaiting_approval",
        stage_since=NOW - timedelta(minutes=42),
        promotion_version="20261128070000",
        promotion_id="p1",
    )
    waiting = {"id": "q1", "version": "20261128075800", "requested_by": "ci", "requested_at": ""}
    rows[2] = env(
        "t001-0001",
        "qa",
        stage="restoring",
        stage_since=NOW - timedelta(minutes=3),
        promotion_version="20261128075700",
        promotion_id="p2",
        queued=[waiting],
    )
    an_hour_ago, days_ago = (NOW - timedelta(hours=1)).isoformat(), (NOW - timedelta(days=3)).isoformat()
    rolled_back = {"outcome": "rolled_back", "version": "20261128060000", "reason": "circuit breaker"}
    rows[3] = env("t001-0001", "prod", last={**rolled_back, "at": an_hour_ago, "promotion_id": "p0"})
    failed = {"outcome": "failed", "version": "20261120000000", "reason": "old", "at": days_ago, "promotion_id": "x"}
    rows[4] = env("t002-0001", "qa", last=failed)
    rows[5] = env("t002-0001", "prod", active=None, active_since=None, snapshot=None, endpoint=None)
    return rows


def test_a_thousand_tenants_fit_one_screen_non_idle_rows_first() -> None:
    rows = fleet()
    text = render_overview(rows, NOW, height=24, width=200)
    lines = text.splitlines()
    assert len(lines) <= 24
    assert lines[0] == (
        "1000 tenant(s), 2000 environment(s): 2 in flight (1 awaiting approval), 1 with a queue, "
        "1 ended badly in the last 24h, 1997 idle; 1 never promoted"
    )
    assert lines[1].split()[:3] == ["NAMESPACE", "ACTIVE", "AGE"]
    assert lines[2].startswith("t000-0001-prod") and "awaiting_approval 20261128070000" in lines[2]
    assert "42m00s" in lines[2]
    assert lines[3].startswith("t001-0001-qa") and "restoring" in lines[3] and "20261128075800" in lines[3]
    assert lines[4].startswith("t001-0001-prod") and "rolled_back 20261128060000: circuit breaker" in lines[4]
    assert len(lines) == 6 and lines[-1] == "idle environments not shown: tierlift status --all"
    assert all(len(line) <= 200 for line in lines)


def test_more_non_idle_rows_than_fit_are_cut_and_counted() -> None:
    rows = [env(f"t{i:03d}-0001", "qa", stage="restoring", stage_since=NOW) for i in range(50)]
    lines = render_overview(rows, NOW, height=24).splitlines()
    assert len(lines) == 23
    assert lines[-1] == "… 30 more not shown: tierlift status --all (or --output json)"


def test_all_lists_every_row() -> None:
    assert len(render_overview(fleet(), NOW, show_all=True).splitlines()) == 2002


def test_nothing_to_look_at_says_so() -> None:
    rows = [env("xy-0146", "qa")]
    assert render_overview(rows, NOW).splitlines()[1].startswith("nothing in flight")
    assert "1 idle" in summary_line(rows, NOW)


def test_json_rows_carry_every_field() -> None:
    row = fleet()[2].as_dict(NOW)
    assert row["stage"] == "restoring" and row["stage_seconds"] == 180
    assert row["active_age_seconds"] == 3 * 86400 and row["snapshot"] == "t001-0001-dev-20261120000000"
    assert row["queued"][0]["version"] == "20261128075800"
    json.dumps(row)


def env_record(active: str | None, *completed: str) -> EnvRecord:
    state = EnvState(seq=len(completed), active=active, completed=tuple(Completed(v) for v in completed))
    return EnvRecord(namespace=Namespace.parse("xy-0146-prod"), state=state, config_path="/tierlift/xy-0146/config")


V1, V2, V3 = "20261101000000", "20261102000000", "20261103000000"


def test_a_rollback_promotes_the_version_active_before_the_active_one() -> None:
    assert rollback_target(env_record(V3, V1, V2, V3), None) == Version(V2)
    # Rolled back to V1 after V2: the completed list holds each version once, newest last (V2, V1).
    assert rollback_target(env_record(V1, V2, V1), None) == Version(V2)
    assert rollback_target(env_record(V3, V1, V2, V3), V1) == Version(V1)


@pytest.mark.parametrize(
    ("record", "to", "code", "says"),
    [
        (env_record(V3, V3), None, ExitCode.REFUSED, "no version before 20261103000000: name one with --to VERSION"),
        (env_record(None), None, ExitCode.REFUSED, "nothing is active in xy-0146-prod"),
        (env_record(V3, V2, V3), V3, ExitCode.REFUSED, "already active in xy-0146-prod"),
        (env_record(V3, V2, V3), "yesterday", ExitCode.USAGE, "--to: version 'yesterday' is not YYYYMMDDHHMMSS"),
    ],
)
def test_a_rollback_that_cannot_be_says_why_and_what_to_do(
    record: EnvRecord, to: str | None, code: int, says: str
) -> None:
    with pytest.raises(OperatorError) as caught:
        rollback_target(record, to)
    assert caught.value.code == code and says in caught.value.message
    assert "Error" not in caught.value.message and "None" not in caught.value.message


def test_a_rollback_to_a_version_that_never_ran_is_not_told_its_snapshot_expired() -> None:
    record = env_record(V3, V1, V2, V3)
    never = snapshot_gone(record, Version("20200101000000"), "xy-0146-dev-20200101000000")
    assert "never ran in xy-0146-prod" in never and "TIERLIFT_SOURCE_SNAPSHOTS_KEPT" not in never
    assert "tierlift promote xy-0146 prod --version VERSION" in never
    gone = snapshot_gone(record, Version(V1), f"xy-0146-dev-{V1}")
    assert f"its source snapshot xy-0146-dev-{V1} is gone" in gone and "TIERLIFT_SOURCE_SNAPSHOTS_KEPT" in gone


# history ------------------------------------------------------------------------------------------
def ledger_message(detail_type: str, seconds: int, event_id: str, **detail: Any) -> dict[str, Any]:
    when = datetime(2026, 11, 28, 7, 0, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    body = {
        "id": event_id,
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "source": "tierlift",
        "detail-type": detail_type,
        "detail": {"tenant": "xy-0146", "environment": "prod", **detail},
    }
    return {"message": json.dumps(body), "timestamp": int(when.timestamp() * 1000)}


class FakeLogs:
    """FilterLogEvents in two pages, as CloudWatch Logs pages it."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.calls: list[dict[str, Any]] = []

    def get_paginator(self, name: str) -> FakeLogs:
        assert name == "filter_log_events"
        return self

    def paginate(self, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls.append(kwargs)
        half = len(self.events) // 2
        return [{"events": self.events[:half], "nextToken": "x"}, {"events": self.events[half:]}]


def promotion_story() -> list[dict[str, Any]]:
    pid = "p-1"
    common = {"promotion_id": pid, "version": "20261127200000"}
    return [
        ledger_message("Promotion Requested", 0, pid, version="20261127200000", requested_by="alice"),
        ledger_message("Promotion Started", 1, "e1", previous="20261120000000", **common),
        ledger_message("Database Ready", 600, "e2", **common),
        ledger_message("Approval Requested", 601, "e3", expires_at="2026-11-28T09:00:00Z", **common),
        ledger_message("Promotion Approved", 1800, "e4", command="approve", requested_by="carol", promotion_id=pid),
        ledger_message("Service Deploying", 1801, "e5", **common),
        ledger_message("Promotion Completed", 2100, "e6", **common),
        ledger_message("Promotion Completed", 2101, "e6-dup", **common),  # re-put after a crash: deduped
        ledger_message("Stack Swept", 2200, "e7", promotion_id="sweep", version="20261120000000"),
        {"message": "not json", "timestamp": 0},
    ]


def test_history_folds_the_ledger_per_promotion() -> None:
    logs = FakeLogs(promotion_story())
    events = read_ledger(logs, "/aws/events/tierlift-ledger", tenant="xy-0146", environment="prod")
    assert logs.calls[0]["filterPattern"] == '{ $.detail.tenant = "xy-0146" && $.detail.environment = "prod" }'
    records = fold(events)
    assert len(records) == 1
    record = records[0]
    assert (record.requested_by, record.version, record.previous) == ("alice", "20261127200000", "20261120000000")
    assert [s.stage for s in record.stages] == [
        "restoring",
        "database_ready",
        "awaiting_approval",
        "approved",
        "deploying",
        "completed",
    ]
    assert record.stages[3].by == "carol"
    assert record.outcome == "completed" and record.ended_at is not None
    text = render_history(records)
    assert "xy-0146-prod" in text and "by alice: completed after 35m00s" in text
    assert "approved +30m00s (carol)" in text and "previous 20261120000000" in text


def test_requests_of_the_same_second_are_listed_in_the_order_they_ended() -> None:
    """qa's automatic request ends, then CI's prod request of the same second is sent: the ledger,
    sorted by time and stage, lists CI's ``Promotion Requested`` before qa's first answer."""
    qa = {"promotion_id": "auto-qa", "version": "20261127200000", "requested_by": "tierlift:snapshot/x"}
    prod = {"promotion_id": "ci-7", "version": "20261127200000"}
    story = [
        ledger_message("Promotion Started", 0, "q1", **qa),
        ledger_message("Promotion Completed", 0, "q2", **qa),
        ledger_message("Promotion Requested", 0, "ci-7", version="20261127200000", requested_by="ci"),
        ledger_message("Promotion Started", 0, "c1", **prod),
        ledger_message("Promotion Completed", 1, "c2", **prod),
    ]
    events = read_ledger(FakeLogs(story), "g", tenant="xy-0146")
    assert [r.id for r in fold(events)] == ["auto-qa", "ci-7"]


def test_history_of_a_promotion_id_and_a_start_time() -> None:
    logs = FakeLogs(promotion_story())
    start = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    events = read_ledger(logs, "g", tenant="xy-0146", promotion_id="p-1", start=start)
    assert logs.calls[0]["startTime"] == int(start.timestamp() * 1000)
    assert {e.promotion_id for e in events} == {"p-1"}
    assert events[0].detail_type == "Promotion Requested"


def test_ledger_event_parsing_is_tolerant() -> None:
    assert LedgerEvent.from_message("[]") is None
    assert LedgerEvent.from_message(json.dumps({"source": "aws.rds", "detail": {}})) is None
    assert LedgerEvent.from_message(json.dumps({"source": "tierlift", "detail": {}, "time": "nope"})) is None


def test_ids_that_would_break_the_filter_pattern_are_refused() -> None:
    with pytest.raises(ValueError):
        read_ledger(FakeLogs([]), "g", tenant='x" || 1=1')


def test_since() -> None:
    now = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("20261127200000", now) == datetime(2026, 11, 27, 20, 0, tzinfo=UTC)
    assert parse_since("2026-11-27", now) == datetime(2026, 11, 27, tzinfo=UTC)
    assert parse_since("2026-11-27T10:00:00+01:00", now) == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday", now)


# rows from the recorded state ----------------------------------------------------------------------
def test_rows_from_the_recorded_state() -> None:
    from chalicelib.domain.model import DbRecord, DeployEntry, LastOutcome, Promotion, QueuedRequest, Request
    from chalicelib.domain.names import Tenant
    from tierlift.status import from_recorded, rows_from
    from tierlift.world import Common, tenant_config

    common = Common("nonprod", "vpc-1", ("subnet-0123456789abcdef0",), "sg-0123456789abcdef0", "db", "common-nonprod")
    config = json.dumps(tenant_config("xy-0146", common, common, approval=("prod",)))
    tenant = Tenant.parse("xy-0146")
    active = Version.parse("20261120000000")
    db = DbRecord(
        "xy-0146-prod-db-20261120000000", "i", "xy-0146-prod-20261120000000.abc", 3306, "snap-x", active.value
    )
    pid, qid = "p-1", "q-1"
    in_flight = Promotion(
        Request(pid, "xy-0146", "prod", "20261128070000", started="2026-11-28T07:00:00+00:00"),
        (DeployEntry(1, "2026-11-28T07:10:00+00:00", awaiting=True, expires_at="2026-11-29T07:10:00+00:00"),),
    )
    waiting = QueuedRequest(
        Request(qid, "xy-0146", "prod", None, requested_by="ci", requested_at="2026-11-28T07:30:00+00:00")
    )
    last = LastOutcome("p-0", "20261127000000", "rolled_back", "circuit breaker", "2026-11-28T06:00:00+00:00")

    def state(env: str, active: Version | None = None, last: LastOutcome | None = None, **kw: Any) -> EnvRecord:
        record = EnvState(seq=1, active=active.value if active else None, last=last)
        return EnvRecord(
            tenant.namespace(env), record, config_text=config, config_path="/tierlift/xy-0146/config", **kw
        )

    prod = state(
        "prod",
        active=active,
        promotion=in_flight,
        queued=[waiting],
        last=last,
        active_since=NOW - timedelta(days=2),
        db={active.value: db},
    )
    row = from_recorded(prod)
    assert row is not None
    assert (row.active, row.snapshot, row.endpoint, row.stack) == (active.value, "snap-x", db.endpoint, db.stack)
    assert (row.stage, row.promotion_version, row.cluster, row.service) == (
        "awaiting_approval",
        "20261128070000",
        "common-nonprod",
        "xy-0146-prod",
    )
    assert row.stage_since == datetime(2026, 11, 28, 7, 10, tzinfo=UTC)
    assert row.queued == [
        {"id": qid, "version": None, "requested_by": "ci", "requested_at": "2026-11-28T07:30:00+00:00"}
    ]
    assert row.last is not None and row.last["outcome"] == "rolled_back" and row.last["reason"] == "circuit breaker"
    # The source environment has no row; a namespace of a tenant without a config shows the error.
    assert from_recorded(state("dev")) is None
    orphan = EnvRecord(tenant.namespace("qa"), config_path="/tierlift/xy-0146/config")
    broken = from_recorded(orphan)
    assert broken is not None and broken.error is not None and "no config" in broken.error
    qa = state("qa", active=active)
    (qa_row, prod_row) = rows_from([prod, qa, state("dev")])[::-1]
    assert qa_row.snapshot == "xy-0146-dev-20261120000000" and qa_row.stack == "xy-0146-qa-db-20261120000000"
    text = render_overview([qa_row, prod_row], NOW, width=300)
    assert "awaiting_approval 20261128070000" in text and "50m00s" in text


# history: each request once (issue 20, item 2) ------------------------------------------------------
def three_requests() -> list[dict[str, Any]]:
    """An automatic (qa), a CI (prod, sent twice with its promotion_id) and a manual promotion (prod)."""
    auto, ci, manual = "xy-0146-dev-20261127200000-qa", "ci-build-42", "7f0e-manual"
    qa = {"environment": "qa"}

    def story(pid: str, at: int, env: dict[str, str], version: str, by: str) -> list[dict[str, Any]]:
        common = {"promotion_id": pid, "version": version, **env}
        return [
            ledger_message("Promotion Started", at + 1, f"{pid}-1", requested_by=by, **common),
            ledger_message("Database Ready", at + 60, f"{pid}-2", **common),
            ledger_message("Service Deploying", at + 61, f"{pid}-3", **common),
            ledger_message("Promotion Completed", at + 90, f"{pid}-4", **common),
        ]

    by_snapshot = "tierlift:snapshot/xy-0146-dev-20261127200000"
    return [
        # the pipeline's own request, with its promotion_id (the snapshot's, per environment)
        ledger_message(
            "Promotion Requested",
            0,
            "ev-a",
            version="20261127200000",
            requested_by=by_snapshot,
            promotion_id=auto,
            **qa,
        ),
        *story(auto, 0, qa, "20261127200000", by_snapshot),
        # CI sends its request twice (a retried job): one request
        ledger_message(
            "Promotion Requested", 200, "ev-c1", version="20261127200000", requested_by="ci", promotion_id=ci
        ),
        ledger_message(
            "Promotion Requested", 201, "ev-c2", version="20261127200000", requested_by="ci", promotion_id=ci
        ),
        *story(ci, 200, {}, "20261127200000", "ci"),
        # an approval nobody waited for: rejected, a stage of the CI promotion and not a row of its own
        ledger_message("Promotion Approved", 295, "cmd-1", command="approve", requested_by="bob", promotion_id=ci),
        ledger_message("Promotion Rejected", 296, "rej-1", promotion_id="cmd-1", reason="nothing awaits approval"),
        ledger_message("Promotion Requested", 400, manual, version="20261127200000", requested_by="alice"),
        *story(manual, 400, {}, "20261127200000", "alice")[:2],
    ]


def test_history_shows_each_request_once_automatic_ci_and_manual() -> None:
    events = read_ledger(FakeLogs(three_requests()), "g", tenant="xy-0146")
    records = fold(events, live={"7f0e-manual": "restoring"})
    assert [(r.id, r.namespace, r.requested_by) for r in records] == [
        ("xy-0146-dev-20261127200000-qa", "xy-0146-qa", "tierlift:snapshot/xy-0146-dev-20261127200000"),
        ("ci-build-42", "xy-0146-prod", "ci"),
        ("7f0e-manual", "xy-0146-prod", "alice"),
    ]
    assert [r.status for r in records] == ["completed", "completed", "in flight (restoring)"]
    auto, ci, _ = records
    assert [s.stage for s in auto.stages] == ["restoring", "database_ready", "deploying", "completed"]
    assert [s.stage for s in ci.stages][-1] == "approve_rejected" and ci.stages[-1].by == "nothing awaits approval"
    text = render_history(records)
    assert len([line for line in text.splitlines() if not line.startswith(" ")]) == 3
    assert text.splitlines()[0].startswith("2026-11-28T07:00:00Z  xy-0146-qa ")


def test_a_request_without_an_outcome_is_in_flight_only_while_it_holds_a_lock_or_a_queue_entry() -> None:
    events = read_ledger(FakeLogs(three_requests()), "g", tenant="xy-0146")
    manual = fold(events, live={})[-1]
    assert (manual.in_flight, manual.stage, manual.status) == (False, None, "no outcome yet")
    queued = fold(events, live={"7f0e-manual": "queued"})[-1]
    assert queued.status == "in flight (queued)"
    data = json.loads(json_text([manual.as_dict()]))[0]
    assert data["outcome"] is None and data["in_flight"] is False and data["requested_at"] == "2026-11-28T07:06:40Z"


def test_live_requests_from_the_recorded_state() -> None:
    from chalicelib.domain.model import Promotion, QueuedRequest, Request
    from tierlift.history import live_requests

    ns = Namespace.parse("xy-0146-prod")
    lock = Request("p-1", "xy-0146", "prod", V2)
    waiting = QueuedRequest(Request("q-1", "xy-0146", "prod", V3, requested_at="2026-11-28T07:00:00+00:00"))
    record = EnvRecord(ns, promotion=Promotion(lock), queued=[waiting], config_path="x")
    assert live_requests([record]) == {"p-1": "restoring", "q-1": "queued"}


def test_a_request_without_environment_is_named_so_not_tenant_dash() -> None:
    events = read_ledger(
        FakeLogs([ledger_message("Promotion Rejected", 0, "r", promotion_id="ev-x", reason="environment is missing")]),
        "g",
        tenant="xy-0146",
    )
    # the message builder adds environment prod: take it out, as the pipeline's rejection leaves it out
    events[0].detail.pop("environment")
    (record,) = fold(events, live={})
    assert record.environment is None and record.namespace is None
    assert "xy-0146 (no env)" in render_history([record]) and "xy-0146-  " not in render_history([record])
