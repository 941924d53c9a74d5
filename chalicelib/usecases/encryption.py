"""An unencrypted source snapshot is never restored as it is: its encrypted copy is.

A restored DB takes its snapshot's encryption, so a promotion whose source snapshot is not ``Encrypted``
(``Request.encrypt_with``: the target's ``db.kms_key_id``, else the AWS-managed ``alias/aws/rds``) first
copies it, ``CopyDBSnapshot`` with that ``KmsKeyId`` into ``<namespace>-<version>-encrypted``, tagged
with the namespace's tierlift tags (``tierlift:kind=encrypted-copy``), and restores from the copy.

The copy is asynchronous: the promotion waits holding its lock (stage ``restoring``, no stack yet) until
RDS's ``RDS-EVENT-0197`` (a local snapshot copy finished) for that copy resumes its start
(:func:`chalicelib.usecases.snapshots.on_snapshot_copied`); nothing polls. Every step is idempotent: the
copy's name is deterministic (a second delivery finds it, ``DBSnapshotAlreadyExists`` from a concurrent
one is the same copy), the stack is created with the same name and ``ClientRequestToken``. The sweep
stands in for a lost event (the copy is available, no stack yet) and deletes copies no environment holds.
"""

from __future__ import annotations

import logging

from chalicelib.deps import Deps
from chalicelib.domain import events as ev
from chalicelib.domain.model import COPY_FAILED, WAITING_FOR_COPY, Outcome, Promotion
from chalicelib.domain.names import ENCRYPTED_COPY_KIND, KIND_TAG, PROMOTION_TAG, VERSION_TAG, tags_to_dict
from chalicelib.usecases.endings import end
from chalicelib.usecases.transitions import Result, event_for

logger = logging.getLogger(__name__)


def encrypted_source(deps: Deps, promotion: Promotion) -> Result | None:
    """None when the promotion may restore now (its source is encrypted, or its encrypted copy is
    available); else what it does meanwhile: the copy started (or still copying) ``wait``, or the
    promotion ended (a copy that failed, or a snapshot of that name that is not this copy)."""
    key, source = promotion.request.encrypt_with, promotion.request.snapshot
    if not key or not source:
        return None
    ns, version = promotion.namespace, promotion.version
    copy_id = ns.encrypted_copy_id(version)
    copy = deps.rds.describe_snapshot(copy_id)
    if copy is None:
        tags = ns.tags(version, **{KIND_TAG: ENCRYPTED_COPY_KIND, PROMOTION_TAG: promotion.id})
        if deps.rds.copy_snapshot(source, copy_id, key, tags):
            why = f"{WAITING_FOR_COPY}: {source} is not encrypted; copying it to {copy_id} with KMS key {key}"
            deps.bus.put([event_for(promotion, ev.PROMOTION_QUEUED, reason=why)])
        return Result("wait", f"copying {source} to {copy_id} encrypted with {key}", promotion.id, ns.name)
    tags = tags_to_dict(copy.get("TagList"))
    status = str(copy.get("Status", ""))
    problem: str | None = None
    if not ns.owns(tags) or tags.get(VERSION_TAG) != version.value:
        problem = (
            f"snapshot {copy_id} exists without tierlift's tags for {ns} version {version}: not restoring from "
            "it (rename or delete it, then promote again)"
        )
    elif status in COPY_FAILED:
        problem = f"the encrypted copy {copy_id} of {source} is {status} (the sweep deletes it): promote again"
    elif status != "available":
        return Result("wait", f"{WAITING_FOR_COPY}: {copy_id} is {status}", promotion.id, ns.name)
    elif not copy.get("Encrypted"):
        problem = f"snapshot {copy_id} is not encrypted: not restoring from it (delete it, then promote again)"
    elif key.startswith("arn:") and copy.get("KmsKeyId") != key:
        problem = (
            f"the copy {copy_id} is encrypted with {copy.get('KmsKeyId')}, not the target's key {key} (the sweep "
            "deletes it once no environment holds the version): promote again then"
        )
    if problem is None:
        return None
    logger.warning("promotion %s cannot restore: %s", promotion.id, problem)
    return end(deps, deps.store.read(ns), promotion, Outcome.FAILED, problem)
