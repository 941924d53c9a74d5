"""Benchmark ``tierlift status`` (every tenant): AWS calls and wall time at 100 and 1,000 tenants.

Builds each world in moto (in-process ``mock_aws``): per tenant a config, and for qa and prod an
``active`` version, its ``db/<version>`` record and a ``last`` outcome; a few environments have a
promotion in flight. Then runs the command's own read (:func:`tierlift.status.overview`, as ``status``
does for the default screen and as ``status --output json`` does for every row) and the rendering,
counting every call with a botocore ``before-call`` hook.

Run: ``.venv/bin/python bench/status.py [--sizes 100,1000]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import boto3
from moto import mock_aws

from chalicelib.adapters.ssm import SsmStateStore
from tierlift.status import overview, render_overview
from tierlift.world import Common, tenant_config

NONPROD = Common(
    "nonprod", "vpc-0a", ("subnet-0123456789abcdef0",), "sg-0123456789abcdef0", "common-nonprod-db", "common-nonprod"
)
PROD = Common("prod", "vpc-0b", ("subnet-0fedcba987654321f",), "sg-0fedcba9876543210", "common-prod-db", "common-prod")
VERSION = "20261127200000"


class Counter:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, model: Any, **_: Any) -> None:
        key = f"{model.service_model.service_name}:{model.name}"
        self.calls[key] = self.calls.get(key, 0) + 1


def build(session: boto3.session.Session, tenants: int, in_flight: int) -> None:
    ssm = session.client("ssm")
    store = SsmStateStore(ssm, "/tierlift")
    for i in range(tenants):
        tenant = f"t{i:04d}-0001"
        config = tenant_config(tenant, NONPROD, PROD, approval=("prod",))
        ssm.put_parameter(Name=f"/tierlift/{tenant}/config", Value=json.dumps(config), Type="String")
        for env in ("qa", "prod"):
            ns = store.root + f"/{tenant}/{env}"
            ssm.put_parameter(Name=f"{ns}/active", Value=VERSION, Type="String")
            db = {
                "stack": f"{tenant}-{env}-db-{VERSION}",
                "instance": f"{tenant}-{env}-{VERSION}",
                "endpoint": f"{tenant}-{env}-{VERSION}.abc.us-east-1.rds.amazonaws.com",
                "port": 3306,
                "snapshot": f"{tenant}-dev-{VERSION}",
                "version": VERSION,
            }
            ssm.put_parameter(Name=f"{ns}/db/{VERSION}", Value=json.dumps(db), Type="String")
            last = {"promotion_id": f"p-{i}-{env}", "version": VERSION, "outcome": "completed", "at": ""}
            ssm.put_parameter(Name=f"{ns}/last", Value=json.dumps(last), Type="String")
        if i < in_flight:
            lock = {"id": f"q-{i}", "tenant": tenant, "environment": "prod", "version": "20261128070000"}
            ssm.put_parameter(Name=f"/tierlift/{tenant}/prod/promotion", Value=json.dumps(lock), Type="String")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--in-flight", type=int, default=5)
    args = parser.parse_args()
    print("| tenants | rows | screen: AWS calls | screen: s | json: AWS calls | json: s | lines (24-line screen) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        with mock_aws():
            session = boto3.session.Session(region_name="us-east-1")
            build(session, size, args.in_flight)
            counter = Counter()
            session._session.register("before-call", counter)  # type: ignore[attr-defined]
            store = SsmStateStore(session.client("ssm"), "/tierlift")
            now = datetime.now(UTC)
            started = time.perf_counter()
            rows = overview(session, store, with_services=lambda r, now=now: r.attention(now))
            text = render_overview(rows, now, height=24, width=200)
            screen_s, screen_calls = time.perf_counter() - started, sum(counter.calls.values())
            counter.calls.clear()
            started = time.perf_counter()
            rows = overview(session, store, with_services=lambda r: True)
            json.dumps([r.as_dict(now) for r in rows])
            json_s, json_calls = time.perf_counter() - started, sum(counter.calls.values())
            print(
                f"| {size} | {len(rows)} | {screen_calls} | {screen_s:.1f} | {json_calls} | {json_s:.1f} "
                f"| {len(text.splitlines())} |"
            )


if __name__ == "__main__":
    main()
