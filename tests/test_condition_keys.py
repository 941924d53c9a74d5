"""Every condition key tierlift's policies use is one the action supports (AWS's service authorization
reference, as bundled with parliament): a key an action does not support is never in its request
context, so its condition silently never matches (an Allow that never allows, a Deny that never denies).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import parliament

from tierlift import policies

# Global condition keys (present in every request, or in every request from a service principal).
GLOBAL = {"aws:principalarn", "aws:sourcearn", "aws:sourceaccount", "aws:principalaccount", "aws:calledvia"}


@cache
def services() -> dict[str, dict[str, Any]]:
    data = json.loads((Path(parliament.__file__).parent / "iam_definition.json").read_text())
    return {s["prefix"]: s for s in data}


def _matches(template: str, key: str) -> bool:
    pattern = re.escape(template.lower()).replace(re.escape("${tagkey}"), ".+").replace(re.escape("tag-key"), ".+")
    return re.fullmatch(pattern, key.lower()) is not None


def supported(action: str, key: str) -> bool:
    prefix, name = action.split(":", 1)
    service = services()[prefix]
    [privilege] = [p for p in service["privileges"] if p["privilege"].lower() == name.lower()]
    resource_keys = {r["resource"]: r.get("condition_keys", []) for r in service["resources"]}
    allowed: list[str] = []
    for entry in privilege["resource_types"]:
        allowed += entry.get("condition_keys", [])
        allowed += resource_keys.get(entry["resource_type"].rstrip("*"), [])
    return key.lower() in GLOBAL or any(_matches(t, key) for t in allowed)


def test_every_condition_key_is_supported_by_every_action_it_guards() -> None:
    checked = 0
    for name, document, _identity in policies.documents():
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for block in statement.get("Condition", {}).values():
                for key in block:
                    for action in actions:
                        assert supported(action, key), f"{name} {statement.get('Sid')}: {action} has no {key}"
                        checked += 1
    assert checked > 40  # the policies do use conditions


def test_the_check_itself_refuses_an_unsupported_key() -> None:
    assert supported("rds:AddTagsToResource", "aws:TagKeys")
    assert supported("rds:AddTagsToResource", "aws:ResourceTag/tierlift:managed")  # the snapshot resource's key
    assert supported("events:PutEvents", "events:detail-type")
    assert not supported("events:PutEvents", "events:detailType")  # the spelling docs/security.md once had
    assert not supported("rds:DeleteDBSnapshot", "aws:RequestTag/tierlift:managed")
    assert not supported("ecs:UpdateService", "aws:RequestTag/tierlift:managed")
