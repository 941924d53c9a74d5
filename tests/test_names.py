import pytest

from chalicelib.domain.names import InvalidName, Namespace, Tenant, Version, Versioned, stack_name_from_arn


def test_parse_and_derive():
    ns = Namespace.parse("xy-0146-qa")
    v = Version.parse("20261127200000")
    assert ns.tenant == Tenant("xy", "0146")
    assert ns.stack_name(v) == "xy-0146-qa-db-20261127200000"
    assert ns.instance_id(v) == "xy-0146-qa-20261127200000"
    assert Versioned.parse_stack("xy-0146-qa-db-20261127200000") == Versioned(ns, v)
    assert Versioned.parse_snapshot("xy-0146-dev-20261127200000").namespace.environment == "dev"
    tags = ns.tags(v)
    assert tags["tierlift:managed"] == "true" and tags["Customer"] == "xy" and tags["Project"] == "0146"
    assert ns.owns(tags)
    assert not Namespace.parse("xy-0146-prod").owns(tags)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "XY-0146",
        "x-0146",
        "xy-146",
        "xy-0146-",
        "xy-0146/../../etc",
        "xy-0146\n",
        "averyverylongcustomer-0146",
        "xy-0146-qa",  # a namespace is not a tenant
        None,
        146,
        ["xy-0146"],
        {"tenant": "xy-0146"},
    ],
)
def test_bad_tenants(value):
    with pytest.raises(InvalidName):
        Tenant.parse(value)


@pytest.mark.parametrize(
    "value", ["20261327200000", "2026112720000", "20261127200000x", "2026-11-27", "../../20261127", 20261127200000]
)
def test_bad_versions(value):
    with pytest.raises(InvalidName):
        Version.parse(value)


@pytest.mark.parametrize(
    "value",
    [
        "xy-0146-qa-db-2026112720000",
        "xy-0146-qa-db-20261127200000-x",
        "other-stack",
        "xy-0146-QA-db-20261127200000",
        "xy-0146-qa/db-20261127200000",
    ],
)
def test_bad_stack_names(value):
    with pytest.raises(InvalidName):
        Versioned.parse_stack(value)


def test_stack_name_from_arn():
    arn = "arn:aws:cloudformation:us-east-1:123456789012:stack/xy-0146-qa-db-20261127200000/5b2e8a40"
    assert stack_name_from_arn(arn) == "xy-0146-qa-db-20261127200000"
    with pytest.raises(InvalidName):
        stack_name_from_arn("not-an-arn")
    with pytest.raises(InvalidName):
        stack_name_from_arn(42)


def test_version_from_datetime_is_utc():
    from datetime import datetime, timedelta, timezone

    when = datetime(2026, 11, 27, 21, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert Version.from_datetime(when).value == "20261127200000"
