import copy

import pytest

from chalicelib.domain.config import InvalidConfig, parse_config
from chalicelib.domain.names import Tenant

GOOD = {
    "tenant": "xy-0146",
    "environments": ["dev", "qa", "prod"],
    "source": {"environment": "dev", "db_instance": "xy-0146-dev"},
    "targets": {
        "qa": {
            "cluster": "common-nonprod",
            "service": "xy-0146-qa",
            "container": "app",
            "db": {
                "instance_class": "db.t3.medium",
                "subnet_group": "common-nonprod-db",
                "security_groups": ["sg-0123456789abcdef0"],
            },
        },
        "prod": {
            "cluster": "common-prod",
            "service": "xy-0146-prod",
            "container": "app",
            "db": {
                "instance_class": "db.m6g.large",
                "subnet_group": "common-prod-db",
                "security_groups": ["sg-0fedcba9876543210"],
            },
        },
    },
    "owner": "team-x",
}
TENANT = Tenant.parse("xy-0146")


def test_contract_example_parses_and_keeps_unknown_fields():
    config = parse_config(TENANT, GOOD)
    assert config.environments == ("dev", "qa", "prod")
    assert config.automatic == ("qa",)  # default: the environment after the source
    assert config.target("prod").cluster == "common-prod"
    assert config.environment_before("prod") == "qa"
    assert '"owner": "team-x"' in config.to_json()
    with pytest.raises(InvalidConfig, match="source environment"):
        config.target("dev")


def _broken(path: list, value):
    doc = copy.deepcopy(GOOD)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["tenant"], "ab-9999", "config.tenant"),
        (["environments"], ["dev"], "at least two"),
        (["environments"], ["dev", "dev"], "twice"),
        (["environments"], ["dev", "QA"], "environment"),
        (["source", "environment"], "stage", "not in config.environments"),
        (["source"], KeyError, "config.source is missing"),
        (["targets", "prod"], KeyError, "config.targets.prod is missing"),
        (["targets", "qa", "db", "security_groups"], ["not-a-sg"], "security_groups"),
        (["targets", "qa", "db", "security_groups"], [], "non-empty"),
        (["targets", "qa", "cluster"], "bad name!", "cluster"),
        (["automatic"], ["staging"], "environment"),
        (["automatic"], ["dev"], "not a target"),
        (["targets", "qa", "task"], {"desired_count": -1}, "desired_count"),
    ],
)
def test_invalid_fields_are_named(path, value, message):
    with pytest.raises(InvalidConfig, match=message):
        parse_config(TENANT, _broken(path, value))


def test_not_json():
    with pytest.raises(InvalidConfig, match="not JSON"):
        parse_config(TENANT, "{nope")
    with pytest.raises(InvalidConfig, match="object"):
        parse_config(TENANT, "[1, 2]")
