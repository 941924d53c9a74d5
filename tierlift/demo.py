"""``python -m tierlift demo``: the whole pipeline on the local cloud, with its invariants checked.

The story: bootstrap the common namespace and tenant xy-0146; a dev snapshot promotes itself to qa;
an operator promotes to prod with put-events; a second snapshot reaches qa, and its promotion to prod
with an unhealthy image is rolled back while prod's old DB keeps serving; then (once the sweep exists)
a scheduled sweep removes a planted orphan DB stack. Prints the timeline and a status table, then
checks the contract's invariants and exits non-zero if any fails.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from chalicelib.domain.names import Tenant
from tierlift.local import LocalCloud
from tierlift.status import render_table, tenant_status
from tierlift.world import bootstrap_tenant, register_tenant

TENANT = "xy-0146"
from tierlift.world import IMAGE_REPOSITORY, LOCAL_REGISTRY, UNHEALTHY_IMAGE  # noqa: E402

ALICE = "arn:aws:sts::123456789012:assumed-role/tierlift-operators/alice"

CONTRACT_TAGS = (
    "tierlift:managed",
    "tierlift:tenant",
    "tierlift:environment",
    "tierlift:version",
    "Customer",
    "Project",
    "Environment",
)


@dataclass
class Checks:
    """Invariant checks: each is printed; any failure makes the demo exit non-zero."""

    results: list[tuple[bool, str]] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> bool:
        self.results.append((bool(ok), what))
        return bool(ok)

    @property
    def failed(self) -> list[str]:
        return [what for ok, what in self.results if not ok]

    def render(self) -> str:
        return "\n".join(f"  {'ok  ' if ok else 'FAIL'}  {what}" for ok, what in self.results)


class Demo:
    def __init__(self, cloud: LocalCloud, timeout: float) -> None:
        self.cloud = cloud
        self.timeout = timeout
        self.session = boto3.session.Session(region_name=cloud.region)
        self.events = self.session.client("events")
        self.ssm = self.session.client("ssm")
        self.cfn = self.session.client("cloudformation")
        self.rds = self.session.client("rds")
        self.ecs = self.session.client("ecs")
        self.checks = Checks()
        self.config: dict[str, Any] = {}
        self.people: dict[str, boto3.session.Session] = {}
        self.repository = f"{LOCAL_REGISTRY}/{IMAGE_REPOSITORY}"

    # helpers ------------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.cloud.timeline.add("note", f"== {text}")

    def signed(self, person: str, route: str, **body: Any) -> tuple[int, dict[str, Any]]:
        """A call of tierlift's signed API as ``person`` (a role session in moto's STS)."""
        from tierlift import api
        from tierlift.local.gateway import person as person_session

        if person not in self.people:
            self.people[person] = person_session(self.session, person)
        status, answer = api.call(
            self.people[person], route, {"tenant": TENANT, **body}, url=f"{self.cloud.endpoint}/_api"
        )
        return status, answer if isinstance(answer, dict) else {}

    def put(self, detail_type: str, **detail: Any) -> None:
        response = self.events.put_events(
            Entries=[
                {
                    "Source": "tierlift",
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail),
                    "EventBusName": self.cloud.bus,  # tierlift's bus: the default bus starts nothing
                }
            ]
        )
        if response.get("FailedEntryCount"):
            raise RuntimeError(f"put-events failed: {response['Entries']}")

    def outcome(self, environment: str, after: int, promotion_id: str | None = None) -> dict[str, Any] | None:
        """The first terminal tierlift event of ``environment`` recorded after entry ``after``."""
        terminal = {
            "Promotion Completed",
            "Promotion Failed",
            "Promotion Rolled Back",
            "Promotion Rejected",
            "Promotion Cancelled",
        }
        for entry in self.cloud.timeline.snapshot()[after:]:
            event = entry.event
            if entry.kind != "event" or not event or event.get("source") != "tierlift":
                continue
            if event.get("detail-type") not in terminal or event["detail"].get("environment") != environment:
                continue
            if promotion_id is None or event["detail"].get("promotion_id") == promotion_id:
                return event
        return None

    def wait_outcome(self, environment: str, after: int, promotion_id: str | None = None) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def done() -> bool:
            event = self.outcome(environment, after, promotion_id)
            if event:
                found.append(event)
            return bool(event)

        self.cloud.wait(done, self.timeout, f"the outcome of a promotion to {environment}")
        self.cloud.settle(self.timeout)
        return found[0]

    def active(self, environment: str) -> str | None:
        from chalicelib.adapters.ssm import SsmStateStore

        version = SsmStateStore(self.ssm).get_active(Tenant.parse(TENANT).namespace(environment))
        return version.value if version else None

    def stack(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.cfn.describe_stacks(StackName=name)["Stacks"][0])
        except ClientError:
            return None

    def service(self, environment: str) -> dict[str, Any]:
        target = self.config["targets"][environment]
        return dict(self.ecs.describe_services(cluster=target["cluster"], services=[target["service"]])["services"][0])

    def task_env(self, task_definition: str) -> tuple[str, dict[str, str]]:
        task = self.ecs.describe_task_definition(taskDefinition=task_definition)["taskDefinition"]
        container = next(c for c in task["containerDefinitions"] if c["name"] == "app")
        return container["image"], {e["name"]: e["value"] for e in container.get("environment", [])}

    def next_second(self) -> None:
        """Versions are UTC seconds: make sure two snapshot requests never share one."""
        time.sleep(1.05 - (time.time() % 1.0))

    # the story ------------------------------------------------------------------------------------
    def run(self) -> None:
        self.say("bootstrap: stacks common-nonprod, common-prod, xy-0146-qa, xy-0146-prod (templates/); dev DB; config")
        self.config = bootstrap_tenant(self.session, TENANT)
        self.cloud.settle(self.timeout)

        self.say("a dev snapshot is requested; when it completes, qa is promoted automatically")
        mark = len(self.cloud.timeline.snapshot())
        self.put("Snapshot Requested", tenant=TENANT, requested_by="demo")
        qa1 = self.wait_outcome("qa", mark)
        v1 = qa1["detail"]["version"]
        self.checks.check(qa1["detail-type"] == "Promotion Completed", f"qa: automatic promotion of {v1} completed")

        self.say("an operator promotes qa's version to prod with put-events")
        mark = len(self.cloud.timeline.snapshot())
        self.put("Promotion Requested", tenant=TENANT, environment="prod", requested_by="demo-operator")
        prod1 = self.wait_outcome("prod", mark)
        self.checks.check(
            prod1["detail-type"] == "Promotion Completed" and prod1["detail"]["version"] == v1,
            f"prod: manual promotion of {v1} completed",
        )

        self.say("the tenant's daily snapshot schedule (EventBridge Scheduler) fires; qa gets it automatically")
        self.config["snapshot_schedule"] = {"daily_at": "02:00"}
        register_tenant(self.session, self.config)
        from chalicelib.domain.config import parse_config
        from chalicelib.usecases.schedules import sync
        from tierlift.schedules import stage_schedules

        synced = sync(
            stage_schedules(self.session), Tenant.parse(TENANT), parse_config(Tenant.parse(TENANT), self.config)
        )
        self.checks.check(synced.startswith("snapshot schedule created"), f"schedule: {synced}")
        self.next_second()
        mark = len(self.cloud.timeline.snapshot())
        self.cloud.fire_scheduler(f"snapshot-{TENANT}")
        qa2 = self.wait_outcome("qa", mark)
        v2 = qa2["detail"]["version"]
        self.checks.check(
            qa2["detail-type"] == "Promotion Completed" and v2 != v1, f"qa: automatic promotion of {v2} completed"
        )

        self.say(f"asking for {v2} in prod with another image on the bus: refused, prod takes only what qa ran")
        mark = len(self.cloud.timeline.snapshot())
        self.put(
            "Promotion Requested",
            tenant=TENANT,
            environment="prod",
            version=v2,
            image=UNHEALTHY_IMAGE,
            requested_by="demo",
        )
        refused = self.wait_outcome("prod", mark)
        self.checks.check(
            refused["detail-type"] == "Promotion Rejected"
            and "receives the image that completed in qa" in str(refused["detail"].get("reason")),
            "prod: a request naming an image qa never ran is rejected",
        )
        self.say("alice overrides it (signed, she is in override_by); bob approves; the circuit breaker rolls it back")
        self.config["targets"]["prod"]["override_by"] = [ALICE]
        self.config["targets"]["prod"]["allowed_images"] = [self.repository]
        register_tenant(self.session, self.config)
        prod_td_before = self.service("prod")["taskDefinition"]
        mark = len(self.cloud.timeline.snapshot())
        status, answer = self.signed(
            "alice", "promotions", environment="prod", version=v2, image=UNHEALTHY_IMAGE, override="demo: break glass"
        )
        self.checks.check(status == 200, f"prod: alice's signed override accepted ({answer.get('action')})")
        asked = self.wait_event("Approval Requested", "prod", mark)
        pid = asked["detail"]["promotion_id"]
        status, answer = self.signed("alice", "approvals", environment="prod", promotion_id=pid)
        self.checks.check(
            status == 403 and "two-person rule" in str(answer.get("reason")),
            "prod: alice may not approve her own override",
        )
        status, answer = self.signed("bob", "approvals", environment="prod", promotion_id=pid)
        self.checks.check(status == 200 and answer.get("action") == "deploy", "prod: bob's signed approval cuts over")
        prod2 = self.wait_outcome("prod", mark, promotion_id=pid)
        self.checks.check(prod2["detail-type"] == "Promotion Rolled Back", f"prod: promotion of {v2} rolled back")
        self.check_rollback(v1, v2, prod_td_before)
        self.approval_step(v1, v2)
        self.sweep_step(v1)

    def wait_event(self, detail_type: str, environment: str, after: int) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            for entry in self.cloud.timeline.snapshot()[after:]:
                event = entry.event
                if not (entry.kind == "event" and event and event.get("source") == "tierlift"):
                    continue
                if event.get("detail-type") == detail_type and event["detail"].get("environment") == environment:
                    found.append(event)
                    return True
            return False

        self.cloud.wait(seen, self.timeout, f"{detail_type} in {environment}")
        return found[0]

    def approval_step(self, v1: str, v2: str) -> None:
        """prod now needs a person's go-ahead: one promotion is approved, the next cancelled."""
        self.say("prod now requires approval: the config says so (approval: required)")
        self.config["targets"]["prod"]["approval"] = "required"  # allowed_images is set (required with it)
        register_tenant(self.session, self.config)
        self.say(f"promoting {v2} to prod again, healthy: it restores, then waits for approval")
        mark = len(self.cloud.timeline.snapshot())
        self.signed("alice", "promotions", environment="prod", version=v2)  # two-person: requests are signed
        asked = self.wait_event("Approval Requested", "prod", mark)
        self.checks.check(self.active("prod") == v1, f"prod: while awaiting approval, {v1} stays active")
        self.say("bob approves it, signed (tierlift's API: the approver is his AWS identity)")
        self.signed("bob", "approvals", environment="prod", promotion_id=asked["detail"]["promotion_id"])
        approved = self.wait_outcome("prod", mark)
        self.checks.check(
            approved["detail-type"] == "Promotion Completed" and self.active("prod") == v2,
            f"prod: approved promotion of {v2} completed",
        )
        self.say(f"rolling prod back to {v1} on purpose, then cancelling it while it waits for approval")
        mark = len(self.cloud.timeline.snapshot())
        self.signed("alice", "promotions", environment="prod", version=v1)
        asked = self.wait_event("Approval Requested", "prod", mark)
        self.signed(
            "alice",
            "cancellations",
            environment="prod",
            promotion_id=asked["detail"]["promotion_id"],
            reason="maintenance window closed",
        )
        cancelled = self.wait_outcome("prod", mark)
        self.checks.check(
            cancelled["detail-type"] == "Promotion Cancelled" and self.active("prod") == v2,
            f"prod: cancelled rollback left {v2} active",
        )
        self.cloud.settle(self.timeout)
        self.checks.check(self.stack(f"{TENANT}-prod-db-{v1}") is None, f"prod: the cancelled {v1} stack is gone")

    def check_rollback(self, v1: str, v2: str, td_before: str) -> None:
        service = self.service("prod")
        image, env = self.task_env(service["taskDefinition"])
        self.checks.check(self.active("prod") == v1, f"prod: active is still {v1}")
        self.checks.check(
            service["taskDefinition"] == td_before, "prod: service is back on its previous task definition"
        )
        self.checks.check(
            env.get("TIERLIFT_VERSION") == v1 and "unhealthy" not in image,
            f"prod: running tasks use DB {v1} and a healthy image",
        )
        old = self.stack(f"{TENANT}-prod-db-{v1}")
        self.checks.check(
            old is not None and old["StackStatus"] == "CREATE_COMPLETE", f"prod: DB stack of {v1} kept serving"
        )
        self.checks.check(
            self.stack(f"{TENANT}-prod-db-{v2}") is None, f"prod: the failed version's stack {v2} is gone"
        )

    def sweep_step(self, v1: str) -> None:
        if "sweep" not in self.cloud.schedules:
            self.say("sweep step skipped: app.py has no `sweep` schedule yet (chalicelib.usecases.sweep pending)")
            return
        self.say(f"an orphan DB stack for qa version {v1} is planted; the scheduled sweep removes it")
        name = f"{TENANT}-qa-db-{v1}"
        target = self.config["targets"]["qa"]
        tags = {
            "tierlift:managed": "true",
            "tierlift:tenant": TENANT,
            "tierlift:environment": "qa",
            "tierlift:version": v1,
            "tierlift:promotion": "planted-orphan",
            "tierlift:kind": "db-stack",
            "Customer": "xy",
            "Project": "0146",
            "Environment": "qa",
        }
        params = {
            "Tenant": TENANT,
            "Environment": "qa",
            "Customer": "xy",
            "Project": "0146",
            "Version": v1,
            "SnapshotIdentifier": f"{TENANT}-dev-{v1}",
            "InstanceIdentifier": f"{TENANT}-qa-{v1}",
            "InstanceClass": target["db"]["instance_class"],
            "SubnetGroup": target["db"]["subnet_group"],
            "SecurityGroups": ",".join(target["db"]["security_groups"]),
        }
        template = (Path(__file__).resolve().parents[1] / "chalicelib" / "templates" / "database.yaml").read_text()
        self.cfn.create_stack(
            StackName=name,
            TemplateBody=template,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )
        self.cloud.settle(self.timeout)
        self.checks.check(self.stack(name) is not None, f"orphan {name} planted")
        mark = len(self.cloud.timeline.snapshot())
        self.cloud.fire_schedule("sweep")
        self.cloud.wait(lambda: self.stack(name) is None, self.timeout, f"the sweep to delete {name}")
        self.cloud.settle(self.timeout)
        swept = [
            e.event
            for e in self.cloud.timeline.snapshot()[mark:]
            if e.event and e.event.get("detail-type") == "Stack Swept"
        ]
        self.checks.check(self.stack(name) is None, f"sweep deleted the orphan {name}")
        self.checks.check(bool(swept), "sweep put a Stack Swept event")

    # invariants -----------------------------------------------------------------------------------
    def event_contract(self) -> None:
        """Every output event carries the contract's four keys; each promotion's events come in order."""
        outputs = {
            "Promotion Queued",
            "Promotion Started",
            "Database Ready",
            "Service Deploying",
            "Promotion Completed",
            "Promotion Failed",
            "Promotion Rolled Back",
            "Promotion Rejected",
            "Promotion Cancelled",
            "Approval Requested",
            "Stack Swept",
        }
        seen = [e for e in self.cloud.timeline.events(source="tierlift") if e.get("detail-type") in outputs]
        # An operator's command is also a `Promotion Cancelled` (with `command`): it is an input, not ours.
        seen = [e for e in seen if "command" not in e.get("detail", {})]
        keys = ("tenant", "environment", "promotion_id", "version")
        missing = [e["detail-type"] for e in seen if not all(k in e.get("detail", {}) for k in keys)]
        self.checks.check(
            bool(seen) and not missing, f"all {len(seen)} output events hold tenant, environment, promotion_id, version"
        )
        by_promotion: dict[str, list[str]] = {}
        for event in seen:
            if event["detail-type"] != "Stack Swept":
                by_promotion.setdefault(str(event["detail"].get("promotion_id")), []).append(event["detail-type"])
        allowed = (
            ["Promotion Started", "Database Ready", "Service Deploying", "Promotion Completed"],
            ["Promotion Started", "Database Ready", "Service Deploying", "Promotion Rolled Back"],
            ["Promotion Started", "Approval Requested", "Database Ready", "Service Deploying", "Promotion Completed"],
            ["Promotion Started", "Approval Requested", "Promotion Cancelled"],
            # the override, approved by a second person, then rolled back by the circuit breaker
            ["Promotion Started", "Approval Requested", "Database Ready", "Service Deploying", "Promotion Rolled Back"],
        )
        rejected = [pid for pid, types in by_promotion.items() if types == ["Promotion Rejected"]]
        started = {pid: types for pid, types in by_promotion.items() if pid not in rejected}
        out_of_order = [pid for pid, types in started.items() if types not in allowed]
        self.checks.check(
            len(started) == 6 and not out_of_order,
            f"each of the {len(started)} promotions went Started -> [Approval Requested ->] Database Ready -> "
            "Service Deploying -> one end, or Started -> Approval Requested -> Cancelled",
        )
        self.checks.check(
            len(rejected) == 2, f"{len(rejected)} refusals (another image for prod; a self-approval), nothing else"
        )

    def invariants(self) -> None:
        c = self.checks
        self.event_contract()
        c.check(
            not self.cloud.dead_letters, f"no handler invocation was dead-lettered ({len(self.cloud.dead_letters)})"
        )
        live = [s for s in self.cfn.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"]
        for env in ("qa", "prod"):
            ns = f"{TENANT}-{env}"
            active = self.active(env)
            c.check(active is not None, f"{ns}: has an active version ({active})")
            try:
                self.ssm.get_parameter(Name=f"/tierlift/{TENANT}/{env}/promotion")
                locked = True
            except ClientError:
                locked = False
            c.check(not locked, f"{ns}: no promotion left in flight (lock released)")
            stacks = [s["StackName"] for s in live if s["StackName"].startswith(f"{ns}-db-")]
            c.check(stacks == [f"{ns}-db-{active}"], f"{ns}: exactly one DB stack, the active one ({stacks})")
            stack = self.stack(f"{ns}-db-{active}")
            tags = {t["Key"]: t["Value"] for t in (stack or {}).get("Tags", [])}
            c.check(all(k in tags for k in CONTRACT_TAGS), f"{ns}: the active stack carries the contract's tags")
            db = json.loads(self.ssm.get_parameter(Name=f"/tierlift/{TENANT}/{env}/db/{active}")["Parameter"]["Value"])
            instance = self.rds.describe_db_instances(DBInstanceIdentifier=db["instance"])["DBInstances"][0]
            itags = {t["Key"]: t["Value"] for t in instance.get("TagList", [])}
            c.check(
                instance["Engine"] == "mysql"
                and instance["EngineVersion"] == "8.0.39"
                and instance["AllocatedStorage"] == 20
                and instance.get("DBName") == "app",
                f"{ns}: DB {db['instance']} restored from the snapshot (mysql 8.0.39, 20 GiB, database app)",
            )
            c.check(
                all(k in itags for k in CONTRACT_TAGS) and itags["tierlift:environment"] == env,
                f"{ns}: the DB instance carries the contract's tags",
            )
            service = self.service(env)
            _image, task_env = self.task_env(service["taskDefinition"])
            deployments = service.get("deployments", [])
            c.check(
                len(deployments) == 1 and deployments[0].get("rolloutState") == "COMPLETED",
                f"{ns}: the service's one deployment is COMPLETED",
            )
            c.check(
                task_env.get("TIERLIFT_VERSION") == active and task_env.get("DB_HOST") == db["endpoint"],
                f"{ns}: the service's tasks point at the active DB ({db['endpoint']})",
            )
        finals = [
            s
            for s in self.rds.describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
            if "-final-" in s["DBSnapshotIdentifier"]
        ]
        kinds = {t["Value"] for s in finals for t in s.get("TagList", []) if t["Key"] == "tierlift:kind"}
        c.check(
            bool(finals) and kinds == {"final-snapshot"} and all(s["Status"] == "available" for s in finals),
            f"deleted DB stacks left final snapshots ({len(finals)}), tagged tierlift:kind=final-snapshot",
        )


def run_demo(speed: float = 600.0, timeout: float = 60.0, quiet: bool = False) -> int:
    """Run the story; print the timeline (live), the status table and the checks; 0 when all pass."""
    started = time.monotonic()
    log = Path(tempfile.gettempdir()) / "tierlift-local" / f"demo-handlers-{os.getpid()}.log"
    cloud = LocalCloud(
        port=0,
        speed=speed,
        schedules=False,
        echo=False,
        handler_log=log,
        environment={"TIERLIFT_GRACE_SECONDS": "0"},
        concurrency=4,  # invocations side by side, as Lambda runs them
    )
    print(f"tierlift demo: local cloud at speed x{speed:g} (handler logs: {log})", flush=True)
    print(f"times are wall-clock seconds since the cloud started; one second is {speed / 60:g} AWS minutes", flush=True)
    if not quiet:
        print()
        print(cloud.timeline.header(), flush=True)
        cloud.timeline.echo = True
    demo: Demo | None = None
    error: str | None = None
    with cloud:
        demo = Demo(cloud, timeout)
        try:
            demo.run()
        except (TimeoutError, ClientError, RuntimeError, KeyError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        try:
            cloud.settle(timeout)
        except TimeoutError as exc:
            error = error or str(exc)
        cloud.timeline.echo = False
        print()
        try:
            print(render_table(tenant_status(demo.session, TENANT)))
            demo.invariants()
        except (ClientError, LookupError, KeyError, StopIteration) as exc:
            error = error or f"{type(exc).__name__}: {exc}"
    assert demo is not None
    if error:
        demo.checks.check(False, f"the story ran to its end ({error})")
    print()
    print("invariants:")
    print(demo.checks.render())
    elapsed = time.monotonic() - started
    failed = demo.checks.failed
    print()
    print(
        f"demo {'FAILED' if failed else 'passed'}: {len(demo.checks.results) - len(failed)}/{len(demo.checks.results)} "
        f"checks in {elapsed:.1f}s, {cloud.invocations} handler invocations"
    )
    return 1 if failed else 0
