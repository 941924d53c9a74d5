"""Account cells (issue 17, item 6): tenants whose databases and services live in another account.

moto keeps its state per account id and ``sts:AssumeRole`` into another account hands out credentials
of that account, so the central tierlift (its SSM, its bus) and two cells run in one process.
``tierlift.moto_patches.apply_cell_roles`` adds what moto lacks: a ``tierlift-cell*`` role that does not
exist, or whose trust policy's external id does not match, is refused with ``AccessDenied``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.deps import Deps, set_deps
from chalicelib.domain.cells import Cell, foreign_event, parse_cell
from chalicelib.domain.config import InvalidConfig, parse_config
from chalicelib.domain.names import Namespace, Tenant, Version
from chalicelib.settings import Settings
from tests.conftest import Events, Outbox, ensure_bus, session, take_source_snapshot
from tests.flow import Pipeline
from tierlift.world import bootstrap_tenant, register_tenant

# moto's STS has no error shape for AccessDenied (AWS's answer is the same code); botocore parses it anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Exception\\(STSClientError\\) with code AccessDenied")

CENTRAL = "123456789012"
CELL = "222222222222"
REFUSING = "333333333333"
EXTERNAL_ID = "tierlift-dev-0f3c9a1e"
V1 = "20261127200000"


def _role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/tierlift-cell-dev"


def _cell(account: str) -> dict[str, str]:
    return {"account": account, "region": "us-east-1", "role_arn": _role(account)}


# --------------------------------------------------------------------------------------------------
# The config's cell
# --------------------------------------------------------------------------------------------------
def _config(**extra: Any) -> dict[str, Any]:
    db = {"instance_class": "db.t3.micro", "subnet_group": "g", "security_groups": ["sg-0123456789abcdef0"]}
    return {
        "tenant": "xy-0146",
        "environments": ["dev", "qa"],
        "source": {"environment": "dev", "db_instance": "xy-0146-dev"},
        "targets": {"qa": {"cluster": "c", "service": "xy-0146-qa", "container": "app", "db": db}},
        **extra,
    }


def test_config_without_cell_is_the_central_account() -> None:
    assert parse_config(Tenant.parse("xy-0146"), _config()).cell is None


def test_config_cell_parses() -> None:
    config = parse_config(Tenant.parse("xy-0146"), _config(cell=_cell(CELL)))
    assert config.cell == Cell(CELL, "us-east-1", _role(CELL))
    assert json.loads(config.to_json())["cell"] == _cell(CELL)  # kept as written


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("222222222222", "must be an object"),
        ({**_cell(CELL), "account": "2222"}, "config.cell.account must be a 12-digit AWS account id"),
        ({**_cell(CELL), "region": "mars"}, "config.cell.region must be an AWS region"),
        ({**_cell(CELL), "role_arn": _role(REFUSING)}, f"is a role of account {REFUSING}, not of the cell's"),
        ({**_cell(CELL), "role_arn": f"arn:aws:iam::{CELL}:role/admin"}, "must be the cell's role"),
        ({**_cell(CELL), "external_id": "x"}, "unknown field(s) 'external_id'"),
        ({"account": CELL, "region": "us-east-1"}, "config.cell.role_arn must be"),
    ],
)
def test_config_cell_is_validated(cell: Any, message: str) -> None:
    with pytest.raises(InvalidConfig, match=re.escape(message)):
        parse_config(Tenant.parse("xy-0146"), _config(cell=cell))


def test_cell_refuses_a_bad_value_named_by_its_field() -> None:
    with pytest.raises(ValueError, match=r"promotion\.cell\.account"):
        parse_cell({"account": 1}, "promotion.cell")


def test_foreign_event_rules() -> None:
    cell = Cell(CELL, "us-east-1", _role(CELL))
    assert foreign_event(CELL, cell, CENTRAL) is None
    assert foreign_event(CENTRAL, cell, CENTRAL) == (
        f"event from account {CENTRAL}, but the tenant's resources are in its cell {CELL}"
    )
    assert foreign_event(None, cell, None) is not None  # a cell tenant's event must name its account
    assert foreign_event(CENTRAL, None, CENTRAL) is None
    assert "the central account" in str(foreign_event(CELL, None, CENTRAL))
    assert foreign_event(CELL, None, None) is None  # the deployment does not name its account: unchecked


# --------------------------------------------------------------------------------------------------
# Two cells in one moto
# --------------------------------------------------------------------------------------------------
def account_session(central: boto3.session.Session, account: str) -> boto3.session.Session:
    """A session in ``account`` (moto: credentials of an assumed role belong to the role's account)."""
    creds = central.client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/admin", RoleSessionName="setup")
    c = creds["Credentials"]
    built = session()
    return boto3.session.Session(
        botocore_session=built._session,
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
        region_name="us-east-1",
    )


def deploy_cell_role(cell: boto3.session.Session, external_id: str = EXTERNAL_ID) -> None:
    """What ``templates/cell.yaml`` creates, as far as the trust goes: the role, trusting the central
    account's functions with the external id."""
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{CENTRAL}:root"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }
    cell.client("iam").create_role(RoleName="tierlift-cell-dev", AssumeRolePolicyDocument=json.dumps(trust))


class Cells:
    """The central account (tenant xy-0146, no cell), a cell (ab-0001) and a cell whose role refuses
    (cd-0002: no role there)."""

    def __init__(self, central: boto3.session.Session, pipeline: Pipeline) -> None:
        self.central = central
        self.pipeline = pipeline
        self.events: Events = pipeline.events
        self.cell = account_session(central, CELL)
        self.refusing = account_session(central, REFUSING)
        bootstrap_tenant(central)
        deploy_cell_role(self.cell)
        for name, where, account in (("ab-0001", self.cell, CELL), ("cd-0002", self.refusing, REFUSING)):
            config = bootstrap_tenant(where, name)
            register_tenant(central, {**config, "cell": _cell(account)})

    def request(self, tenant: str, version: str, environment: str = "qa") -> dict[str, Any]:
        event = self.events.promotion_requested(tenant=tenant, environment=environment, version=version)
        return self.pipeline.invoke("promotion_requested", event) | {"event": event}

    def stack_event(
        self, where: boto3.session.Session, tenant: str, version: str, status: str, account: str
    ) -> dict[str, Any]:
        name = Namespace.parse(f"{tenant}-qa").stack_name(Version.parse(version))
        stack_id = where.client("cloudformation").describe_stacks(StackName=name)["Stacks"][0]["StackId"]
        event = self.events.stack_status(name, status, stack_id=stack_id)
        event["account"] = account
        return self.pipeline.invoke("stack_status", event)

    def deployment_event(self, tenant: str, account: str) -> dict[str, Any]:
        promotion = self.pipeline.deps.store.get_promotion(Namespace.parse(f"{tenant}-qa"))
        assert promotion is not None and promotion.deployment_id
        event = self.events.deployment(promotion.deployment_id, service=f"{tenant}-qa")
        event["account"] = account
        event["resources"] = [f"arn:aws:ecs:us-east-1:{account}:service/common-nonprod/{tenant}-qa"]
        return self.pipeline.invoke("deployment_state", event)

    def active(self, tenant: str) -> str | None:
        version = self.pipeline.deps.store.get_active(Namespace.parse(f"{tenant}-qa"))
        return version.value if version else None

    def db_stacks(self, where: boto3.session.Session) -> set[str]:
        stacks = where.client("cloudformation").describe_stacks()["Stacks"]
        return {s["StackName"] for s in stacks if "-db-" in s["StackName"] and s["StackStatus"] != "DELETE_COMPLETE"}


@pytest.fixture
def cells(aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cells]:
    from chalicelib.usecases.headroom import forget_cached

    monkeypatch.setenv("TIERLIFT_CELL_EXTERNAL_ID", EXTERNAL_ID)
    monkeypatch.setenv("TIERLIFT_CENTRAL_ACCOUNT", CENTRAL)
    forget_cached()
    deps = Deps.from_session(aws, Settings.from_env())
    ensure_bus(aws, deps.settings.event_bus)
    set_deps(deps)
    outbox = Outbox(aws)
    events = Events()
    events.session = aws
    yield Cells(aws, Pipeline(aws, deps, outbox, events))


def _terminal(outbox: Outbox, tenant: str) -> list[tuple[str, str]]:
    return [
        (e["detail-type"], e["detail"].get("reason", ""))
        for e in outbox.drain()
        if e["detail"].get("tenant") == tenant and e["detail"].get("outcome")
    ]


def test_two_cell_promotion_end_to_end_and_a_refusing_cell(cells: Cells) -> None:
    """Three tenants promoted at once: xy-0146 in the central account, ab-0001 in a cell, cd-0002 in a
    cell whose role does not exist. The first two complete, each in its own account; the third is
    rejected with the reason and nothing of anyone's is touched."""
    outbox, store = cells.pipeline.outbox, cells.pipeline.deps.store
    take_source_snapshot(cells.central, V1)
    take_source_snapshot(cells.cell, V1, "ab-0001")
    take_source_snapshot(cells.refusing, V1, "cd-0002")

    assert cells.request("xy-0146", V1)["action"] == "start"
    assert cells.request("ab-0001", V1)["action"] == "start"
    refused = cells.request("cd-0002", V1)
    assert refused["action"] == "reject"
    assert f"cell {REFUSING} (us-east-1) refused tierlift's role {_role(REFUSING)}: AccessDenied" in refused["reason"]

    # Each DB stack is in its tenant's account; the lock records the cell the promotion runs in.
    assert cells.db_stacks(cells.central) == {f"xy-0146-qa-db-{V1}"}
    assert cells.db_stacks(cells.cell) == {f"ab-0001-qa-db-{V1}"}
    assert cells.db_stacks(cells.refusing) == set()
    promotion = store.get_promotion(Namespace.parse("ab-0001-qa"))
    assert promotion is not None and promotion.request.cell == _cell(CELL)

    # A CREATE_COMPLETE about ab-0001's stack from another account (the central one, or the refusing
    # cell) is ignored with the reason: a cell cannot steer another cell's tenant.
    for account in (CENTRAL, REFUSING):
        ignored = cells.stack_event(cells.cell, "ab-0001", V1, "CREATE_COMPLETE", account)
        assert ignored["action"] == "ignore"
        assert f"event from account {account}, but the tenant's resources are in its cell {CELL}" in ignored["reason"]
    assert store.get_promotion(Namespace.parse("ab-0001-qa")).stage == "restoring"  # type: ignore[union-attr]

    assert cells.stack_event(cells.central, "xy-0146", V1, "CREATE_COMPLETE", CENTRAL)["action"] == "deploy"
    assert cells.stack_event(cells.cell, "ab-0001", V1, "CREATE_COMPLETE", CELL)["action"] == "deploy"
    # The cell's service runs on the new DB; the central account has no such service.
    ecs = cells.cell.client("ecs")
    service = ecs.describe_services(cluster="common-nonprod", services=["ab-0001-qa"])["services"][0]
    assert service["taskDefinition"].split(":")[4] == CELL
    central_services = cells.central.client("ecs").describe_services(cluster="common-nonprod", services=["ab-0001-qa"])
    assert not central_services["services"]

    wrong = cells.deployment_event("ab-0001", CENTRAL)
    assert wrong["action"] == "ignore" and "not ab-0001-qa's deployment" in wrong["reason"]
    assert cells.deployment_event("xy-0146", CENTRAL)["action"] == "complete"
    assert cells.deployment_event("ab-0001", CELL)["action"] == "complete"

    assert cells.active("xy-0146") == V1 and cells.active("ab-0001") == V1
    assert cells.active("cd-0002") is None
    # The state of all three is in the central SSM; the refused tenant's is untouched (its config only).
    cd = store.read_tenant(Tenant.parse("cd-0002"))
    assert cd.config_text is not None and all(rec.promotion is None and rec.active is None for rec in cd.envs.values())
    assert _terminal(outbox, "cd-0002") == [("Promotion Rejected", refused["reason"])]
    completed = [e for e in outbox.seen if e["detail-type"] == "Promotion Completed"]
    assert sorted(e["detail"]["tenant"] for e in completed) == ["ab-0001", "xy-0146"]


def test_wrong_external_id_is_refused(cells: Cells) -> None:
    """A cell role deployed with another deployment's external id refuses this tierlift."""
    other = account_session(cells.central, "444444444444")
    deploy_cell_role(other, external_id="someone-else")
    config = bootstrap_tenant(other, "ef-0003")
    register_tenant(cells.central, {**config, "cell": _cell("444444444444")})
    take_source_snapshot(other, V1, "ef-0003")
    refused = cells.request("ef-0003", V1)
    assert refused["action"] == "reject" and "AccessDenied" in refused["reason"]
    assert cells.db_stacks(other) == set()


def test_snapshot_request_in_a_refusing_cell_fails_with_the_reason(cells: Cells) -> None:
    answer = cells.pipeline.invoke("snapshot_requested", cells.events.snapshot_requested("cd-0002"))
    assert answer["action"] == "reject" and "refused tierlift's role" in answer["reason"]
    failed = [e for e in cells.pipeline.outbox.drain() if e["detail-type"] == "Snapshot Failed"]
    assert len(failed) == 1 and "refused tierlift's role" in failed[0]["detail"]["reason"]


def test_snapshot_in_a_cell_and_its_event_from_the_cell(cells: Cells) -> None:
    answer = cells.pipeline.invoke("snapshot_requested", cells.events.snapshot_requested("ab-0001"))
    snapshot_id = answer["namespace"]
    assert snapshot_id.startswith("ab-0001-dev-")
    cells.cell.client("rds").describe_db_snapshots(DBSnapshotIdentifier=snapshot_id)  # in the cell
    event = cells.events.snapshot_created(snapshot_id)
    event["account"] = CENTRAL
    ignored = cells.pipeline.invoke("snapshot_created", event)
    assert ignored["action"] == "ignore" and f"its cell {CELL}" in ignored["reason"]
    event = cells.events.snapshot_created(snapshot_id)
    event["account"] = CELL
    assert cells.pipeline.invoke("snapshot_created", event)["action"] == "request"


def test_sweep_lists_each_cell_and_reports_the_refusing_one(cells: Cells) -> None:
    from chalicelib.usecases.sweep import run_sweep

    result = run_sweep(cells.pipeline.deps, dry_run=True)
    cell_headroom = result.headroom["cells"]
    assert cell_headroom[f"{CELL}/us-east-1"]["status"] in ("ok", "partial")
    assert cell_headroom[f"{REFUSING}/us-east-1"]["status"] == "unknown"
    assert "refused tierlift's role" in cell_headroom[f"{REFUSING}/us-east-1"]["reason"]
    # The refusing cell's tenant is reported with the reason, and nothing of it is planned.
    assert [(e.item.kind, e.item.target) for e in result.entries if "cd-0002" in e.item.target] == [
        ("report", "cd-0002/config")
    ]
    assert not result.errors


# --------------------------------------------------------------------------------------------------
# templates/cell.yaml
# --------------------------------------------------------------------------------------------------
def test_cell_template_is_generated_from_the_central_grants() -> None:
    from tierlift import cell

    assert cell.TEMPLATE.read_text(encoding="utf-8") == cell.rendered(), "run python -m tierlift.cell"
    resources = cell.template()["Resources"]
    trust = resources["CellRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust[0]["Condition"]["StringEquals"] == {"sts:ExternalId": {"Ref": "ExternalId"}}
    assert trust[0]["Condition"]["ArnLike"]["aws:PrincipalArn"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${CentralAccount}:role/tierlift-${Stage}-*"
    }
    statements = resources["CellRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    actions = {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert not any(a.startswith(("ssm:", "events:", "scheduler:")) for a in actions)  # state and bus stay central
    deletes = [s for s in statements if s["Action"] in ("cloudformation:DeleteStack", "rds:DeleteDBSnapshot")]
    assert deletes and all("aws:ResourceTag/tierlift:managed" in json.dumps(s) for s in deletes)
    rule = resources["ForwardRule"]["Properties"]
    assert rule["EventPattern"]["source"] == ["aws.rds", "aws.cloudformation", "aws.ecs", "aws.secretsmanager"]


def test_a_rotation_in_a_cell_redeploys_there_and_one_from_elsewhere_is_ignored(cells: Cells) -> None:
    from tests.test_rotation import rotation_event

    take_source_snapshot(cells.cell, V1, "ab-0001")
    assert cells.request("ab-0001", V1)["action"] == "start"
    cells.stack_event(cells.cell, "ab-0001", V1, "CREATE_COMPLETE", CELL)
    assert cells.deployment_event("ab-0001", CELL)["action"] == "complete"
    db = cells.pipeline.deps.store.get_db(Namespace.parse("ab-0001-qa"), Version(V1))
    assert db is not None and f":{CELL}:" in db["secret_arn"]

    # The cell's secret named in an event of the central account: not found there, nothing happens.
    central = cells.pipeline.invoke("secret_rotated", rotation_event(db["secret_arn"], "rot-central"))
    assert central["action"] == "ignore"
    event = rotation_event(db["secret_arn"], "rot-cell")
    event["account"] = CELL
    result = cells.pipeline.invoke("secret_rotated", event)
    assert result["action"] == "redeploy", result
    ecs = cells.cell.client("ecs")
    service = ecs.describe_services(cluster="common-nonprod", services=["ab-0001-qa"])["services"][0]
    assert len(service["deployments"]) >= 1 and service["taskDefinition"].split(":")[4] == CELL
