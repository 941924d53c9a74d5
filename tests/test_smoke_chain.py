from chalice.test import Client

from app import app
from tests.conftest import take_source_snapshot


def test_chain_smoke(world, deps, outbox, events, aws):
    take_source_snapshot(aws, "20261127200000")
    with Client(app) as client:
        r = client.lambda_.invoke("snapshot_created", events.snapshot_created("xy-0146-dev-20261127200000"))
        print(r.payload)
        reqs = outbox.drain()
        print([e["detail-type"] for e in reqs])
        r = client.lambda_.invoke("promotion_requested", reqs[0])
        print(r.payload)
        print(outbox.types())
        r = client.lambda_.invoke(
            "stack_status", events.stack_status("xy-0146-qa-db-20261127200000", "CREATE_COMPLETE")
        )
        print(r.payload)
        print(outbox.types())
        p = deps.store.get_promotion(
            deps.store and __import__("chalicelib.names", fromlist=["x"]).Namespace.parse("xy-0146-qa")
        )
        print(p)
        r = client.lambda_.invoke("deployment_state", events.deployment(p.deployment_id))
        print(r.payload)
        print(outbox.types())
