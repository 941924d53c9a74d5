"""Fixes for moto gaps that stand between our CloudFormation templates and moto.

Operator wing only (tests, local cloud, benchmarks): never imported by ``chalicelib``. Each patch is
applied once, idempotently, by :func:`apply`. Every patched moto internal is looked up through
:func:`_require`, so a moto upgrade that moves one fails loudly at start instead of silently
changing behaviour. Fixes that belong upstream in moto are marked ``upstream:``.
"""

from __future__ import annotations

import copy
import json
import secrets
import threading
from types import SimpleNamespace
from typing import Any, Protocol

_applied = False
_once_applied = False


def _require(owner: Any, name: str) -> Any:
    """``owner.name``, or a RuntimeError naming what moved (the patches were written for moto 5.2)."""
    try:
        return getattr(owner, name)
    except AttributeError:
        import moto

        raise RuntimeError(
            f"tierlift.moto_patches: moto {moto.__version__} has no {getattr(owner, '__name__', owner)}.{name}; "
            "the patch that needs it must be revised for this moto version"
        ) from None


def _manage_master_user_password(instance: Any, properties: dict[str, Any], account_id: str, region: str) -> None:
    """What CloudFormation's AWS::RDS::DBInstance handler does for ``ManageMasterUserPassword: true``.

    upstream: moto's CloudFormation ignores the property. RestoreDBInstanceFromDBSnapshot accepts it for
    Oracle only, so CloudFormation creates/restores the instance, then calls ModifyDBInstance with
    ManageMasterUserPassword (applied immediately): RDS generates a new password and keeps it in a new
    secret ``rds!db-<uuid>``. moto's restore copies the source instance's managed secret flag (RDS does
    not); that copy is dropped so the instance ends with exactly one secret, its own.
    """
    if getattr(instance, "_tierlift_secret_managed", False):
        return
    from moto.rds.models import rds_backends

    stale = getattr(instance, "master_user_secret", None)
    if stale is not None:
        stale.delete_secret()
        del instance.master_user_secret
    kms_key = (properties.get("MasterUserSecret") or {}).get("KmsKeyId") or None
    rds_backends[account_id][region].modify_db_instance(
        instance.db_instance_identifier,
        {"manage_master_user_password": True, "master_user_secret_kms_key_id": kms_key, "apply_immediately": True},
    )
    instance._tierlift_secret_managed = True


def _apply_once() -> None:
    """The template fixes that wrap nothing of ours (applied once per process)."""
    global _once_applied
    if _once_applied:
        return
    from moto.ecs.models import Service, TaskDefinition, ecs_backends
    from moto.rds.models import DBInstance, MasterUserSecret

    # RDS-managed secrets. upstream: moto stores {"username": "admin", "password": "P@55w0rd!"} for
    # every instance; RDS stores the instance's master user name and a password of its own.
    _require(MasterUserSecret, "_generate_secret_string")

    def secret_string(self: Any) -> str:
        username = getattr(self.resource, "master_username", None) or "admin"
        return json.dumps({"username": username, "password": secrets.token_urlsafe(24)})

    MasterUserSecret._generate_secret_string = secret_string  # type: ignore[method-assign]

    # upstream: Fn::GetAtt DBInstance.MasterUserSecret.SecretArn is not implemented.
    has_attr = _require(DBInstance, "has_cfn_attr").__func__
    get_attr = _require(DBInstance, "get_cfn_attribute")

    def db_has_cfn_attr(cls: Any, attr: str) -> bool:
        return attr == "MasterUserSecret.SecretArn" or bool(has_attr(cls, attr))

    def db_get_cfn_attribute(self: Any, attribute_name: str) -> Any:
        secret = getattr(self, "master_user_secret", None)
        if attribute_name == "MasterUserSecret.SecretArn" and secret is not None:
            return secret.secret_arn
        return get_attr(self, attribute_name)

    DBInstance.has_cfn_attr = classmethod(db_has_cfn_attr)  # type: ignore[method-assign,assignment]
    DBInstance.get_cfn_attribute = db_get_cfn_attribute  # type: ignore[method-assign]

    # upstream: AWS::ECS::TaskDefinition keeps only Family, ContainerDefinitions, Volumes and Memory
    # (roles, network mode, compatibilities, CPU and tags are dropped).
    _require(TaskDefinition, "create_from_cloudformation_json")
    from moto.core.utils import pascal_to_camelcase, remap_nested_keys

    def task_definition_from_cfn(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        return ecs_backends[account_id][region_name].register_task_definition(
            family=properties.get("Family", resource_name),
            container_definitions=remap_nested_keys(properties.get("ContainerDefinitions", []), pascal_to_camelcase),
            volumes=remap_nested_keys(properties.get("Volumes", []), pascal_to_camelcase),
            network_mode=properties.get("NetworkMode"),
            tags=[{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags", [])] or None,
            requires_compatibilities=properties.get("RequiresCompatibilities"),
            cpu=properties.get("Cpu"),
            memory=properties.get("Memory"),
            task_role_arn=properties.get("TaskRoleArn"),
            execution_role_arn=properties.get("ExecutionRoleArn"),
        )

    TaskDefinition.create_from_cloudformation_json = classmethod(task_definition_from_cfn)  # type: ignore[method-assign,assignment]

    # upstream: AWS::ECS::Service drops LaunchType, NetworkConfiguration, DeploymentConfiguration (the
    # circuit breaker), PropagateTags and Tags.
    _require(Service, "create_from_cloudformation_json")

    def service_from_cfn(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = cloudformation_json["Properties"]
        cluster = properties["Cluster"]
        task_definition = properties["TaskDefinition"]
        vpc = (properties.get("NetworkConfiguration") or {}).get("AwsvpcConfiguration")
        service = ecs_backends[account_id][region_name].create_service(
            getattr(cluster, "name", cluster),
            resource_name,
            properties.get("DesiredCount"),
            task_definition_str=getattr(task_definition, "arn", task_definition),
            tags=[{"key": t["Key"], "value": t["Value"]} for t in properties.get("Tags", [])] or None,
            launch_type=properties.get("LaunchType"),
            propagate_tags=properties.get("PropagateTags", "NONE"),
            network_configuration=(
                {
                    "awsvpcConfiguration": {
                        "subnets": list(vpc.get("Subnets", [])),
                        "securityGroups": list(vpc.get("SecurityGroups", [])),
                        "assignPublicIp": vpc.get("AssignPublicIp", "DISABLED"),
                    }
                }
                if vpc
                else None
            ),
        )
        config = properties.get("DeploymentConfiguration") or {}
        breaker = config.get("DeploymentCircuitBreaker") or {}
        service.deployment_configuration = {  # type: ignore[attr-defined]
            "deploymentCircuitBreaker": {
                "enable": str(breaker.get("Enable", False)).lower() == "true",
                "rollback": str(breaker.get("Rollback", False)).lower() == "true",
            },
            "maximumPercent": int(config.get("MaximumPercent", 200)),
            "minimumHealthyPercent": int(config.get("MinimumHealthyPercent", 100)),
        }
        if observer is not None and service.deployments:
            observer.on_deployment(service, service.deployments[0])
        return service

    Service.create_from_cloudformation_json = classmethod(service_from_cfn)  # type: ignore[method-assign,assignment]

    # upstream: AWS::IAM::Role stores each inline policy as str(dict) (GetRolePolicy then returns a
    # Python repr, not JSON).
    from moto.iam.models import Role

    role_from_cfn = _require(Role, "create_from_cloudformation_json").__func__

    def role_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        properties["Policies"] = [
            dict(
                p,
                PolicyDocument=p["PolicyDocument"]
                if isinstance(p["PolicyDocument"], str)
                else json.dumps(p["PolicyDocument"]),
            )
            for p in properties.get("Policies", [])
        ]
        patched = dict(cloudformation_json, Properties=properties)
        return role_from_cfn(cls, resource_name, patched, account_id, region_name, **kwargs)

    Role.create_from_cloudformation_json = classmethod(role_from_cloudformation_json)  # type: ignore[method-assign,assignment]

    # Speed only. upstream: moto parses every template with PyYAML's pure-Python loader (JSON too: it
    # tries YAML first), for every CreateStack: a third of a handler test's time went to parsing the
    # same few templates again. Parsed once per distinct text; each stack gets its own deep copy.
    from moto.cloudformation.models import Stack as CfnStack

    parse = _require(CfnStack, "parse_template")
    parsed: dict[str, Any] = {}
    parsed_lock = threading.Lock()

    def parse_template(template: str) -> dict[str, Any]:
        with parsed_lock:
            if template not in parsed:
                if len(parsed) > 64:
                    parsed.clear()
                parsed[template] = parse(template)
            return copy.deepcopy(parsed[template])

    CfnStack.parse_template = staticmethod(parse_template)  # type: ignore[method-assign,assignment]
    _once_applied = True


def apply_lazy_kms_private_keys() -> None:
    """moto generates an RSA-2048 private key for every KMS key, symmetric ones too (~50 ms each, the
    largest part of a test world's set-up: its templates create log-group keys); only asymmetric keys
    ever use it (Sign, Verify, GetPublicKey). A symmetric key's is made on first use instead."""
    import moto.kms.models as kms

    real = _require(kms, "generate_private_key")
    if getattr(real, "_tierlift_lazy", False):
        return

    class Lazy:
        def __init__(self, key_spec: str) -> None:
            self._key_spec = key_spec
            self._key: Any = None

        def __getattr__(self, name: str) -> Any:
            if self._key is None:
                self._key = real(self._key_spec)
            return getattr(self._key, name)

    def generate_private_key(key_spec: str) -> Any:
        return Lazy(key_spec) if key_spec in ("SYMMETRIC_DEFAULT", "", None) else real(key_spec)

    generate_private_key._tierlift_lazy = True  # type: ignore[attr-defined]
    kms.generate_private_key = generate_private_key


def apply() -> None:
    """Patch moto in this process. Safe to call more than once."""
    global _applied
    if _applied:
        return
    from moto.rds.models import DBInstance

    _apply_once()
    apply_rds_reads()
    apply_cell_roles()
    apply_lazy_kms_private_keys()
    _associate_route_tables_from_cfn()
    original = _require(DBInstance, "create_from_cloudformation_json").__func__

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        # moto expects DBSubnetGroupName to be a resource of the same template; a plain name (a
        # template parameter, as in ours) crashes it with "'str' object has no attribute 'name'".
        properties = dict(cloudformation_json.get("Properties", {}))
        if isinstance(properties.get("DBSubnetGroupName"), str):
            properties["DBSubnetGroupName"] = SimpleNamespace(name=properties["DBSubnetGroupName"])
        # moto reads VpcSecurityGroupIds; CloudFormation's property is VPCSecurityGroups.
        if "VPCSecurityGroups" in properties and "VpcSecurityGroupIds" not in properties:
            properties["VpcSecurityGroupIds"] = properties["VPCSecurityGroups"]
        patched = dict(cloudformation_json, Properties=properties)
        instance = original(cls, resource_name, patched, account_id, region_name, **kwargs)
        if str(properties.get("ManageMasterUserPassword", "")).lower() == "true":
            _manage_master_user_password(instance, properties, account_id, region_name)
        return instance

    DBInstance.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]
    _applied = True


# --------------------------------------------------------------------------------------------------
# Gap fixes for the local cloud: restore from snapshot, DeletionPolicy: Snapshot, failed creates that
# roll back, ECS deployments and the circuit-breaker setting, and hooks for the emulator.
# --------------------------------------------------------------------------------------------------
FINAL_SNAPSHOT_KIND = "final-snapshot"
_gaps_applied = False
_create_options = threading.local()


class RestoreFailed(Exception):
    """A DB instance of a template cannot be created (missing snapshot, injected fault)."""

    def __init__(self, logical_id: str, reason: str) -> None:
        super().__init__(reason)
        self.logical_id = logical_id
        self.reason = reason


class Observer(Protocol):
    """What the local cloud's emulator is told, in the moto request thread that caused it."""

    def stack_failure(self, stack_name: str, account_id: str | None = None) -> str | None:
        """A reason when the creation of that stack (in ``account_id``) must fail (fault injection, the
        account's DB-instance quota), else None."""

    def on_snapshot(self, snapshot: Any) -> None:
        """A DB snapshot was just created (manual, automated or a stack's final snapshot)."""

    def on_snapshot_copied(self, snapshot: Any) -> None:
        """A DB snapshot was just copied (moto copies at once; RDS takes minutes)."""

    def on_snapshot_deleted(self, snapshot: Any) -> None:
        """A DB snapshot was deleted."""

    def on_instance_deleted(self, instance: Any) -> None:
        """A DB instance was deleted (directly or by its stack)."""

    def on_stack_created(self, stack: Any, failure: str | None) -> None:
        """A stack's resources exist (or failed: ``failure``); the observer drives its status on."""

    def on_stack_delete(self, stack: Any) -> bool:
        """DeleteStack was called; True when the observer deletes it later (DELETE_IN_PROGRESS now)."""

    def on_deployment(self, service: Any, deployment: dict[str, Any]) -> None:
        """A new ECS deployment started (service created or its task definition changed)."""


observer: Observer | None = None


def set_observer(new: Observer | None) -> None:
    """Install (or remove) the emulator that makes moto's synchronous changes asynchronous."""
    global observer
    observer = new


def _tags_list_to_dict(tags: Any) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or [] if isinstance(t, dict) and "Key" in t and "Value" in t}


def _dict_to_tags_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def _stack_name(stack_id: str | None) -> str:
    return (stack_id or "").split(":stack/", 1)[-1].split("/", 1)[0]


def is_unhealthy_image(image: str) -> bool:
    """The local rule: an image whose tag is ``unhealthy`` (or starts ``unhealthy-``) never gets healthy."""
    name = image.rsplit("/", 1)[-1]
    if "@" in name or ":" not in name:
        return False
    tag = name.rsplit(":", 1)[1]
    return tag == "unhealthy" or tag.startswith("unhealthy-")


def finish_stack_delete(backend: Any, stack: Any) -> None:
    """What moto's DeleteStack does at once, run when the emulated DELETE_IN_PROGRESS ends."""
    if stack.stack_id not in backend.stacks:
        return
    backend.stacks.pop(stack.stack_id)
    export_names = [export.name for export in stack.exports]
    stack.delete()
    backend.deleted_stacks[stack.stack_id] = stack
    for name in export_names:
        backend.exports.pop(name, None)


def roll_back_stack(stack: Any) -> None:
    """Delete what a failed create made (no final snapshots: nothing finished creating)."""
    stack.resource_map._tierlift_rollback = True
    try:
        stack.resource_map.delete()
    finally:
        stack.resource_map._tierlift_rollback = False


def _notify_after(backend: type, method: str, hook: str) -> None:
    """Wrap ``backend.method`` so the observer's ``hook`` is called with what it returned."""
    original = getattr(backend, method)

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        if observer is not None:
            getattr(observer, hook)(result)
        return result

    setattr(backend, method, wrapper)


def apply_gap_fixes() -> None:
    """Close the moto gaps the local cloud needs (see docs/local-cloud.md). Safe to call more than once.

    Without an :class:`Observer` everything stays synchronous, as in moto: a stack whose instance
    cannot be restored ends in ROLLBACK_COMPLETE at once, deployments stay IN_PROGRESS.
    """
    global _gaps_applied
    if _gaps_applied:
        return
    from moto.cloudformation.models import CloudFormationBackend, Stack
    from moto.cloudformation.parsing import ResourceMap
    from moto.core.utils import utcnow
    from moto.ecs.models import EC2ContainerServiceBackend
    from moto.ecs.responses import EC2ContainerServiceResponse
    from moto.moto_api._internal import mock_random
    from moto.rds.models import DBInstance, RDSBackend, rds_backends

    # 1. AWS::RDS::DBInstance with DBSnapshotIdentifier restores from that snapshot. --------------
    template_create = DBInstance.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        properties = dict(cloudformation_json.get("Properties", {}))
        snapshot_id = properties.get("DBSnapshotIdentifier")
        logical_id = str(kwargs.get("LogicalId", "DBInstance"))
        injected = observer.stack_failure(_stack_name(kwargs.get("StackId")), account_id) if observer else None
        if injected:
            raise RestoreFailed(logical_id, injected)
        if not snapshot_id:
            return template_create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = rds_backends[account_id][region_name]
        snapshot = backend.database_snapshots.get(str(snapshot_id).lower())
        if snapshot is None:
            raise RestoreFailed(logical_id, f"DBSnapshot {snapshot_id} not found (Service: Rds, Status Code: 404)")
        if snapshot.status != "available":
            raise RestoreFailed(logical_id, f"DBSnapshot {snapshot_id} is {snapshot.status}, not available")
        # Tags: the snapshot's (as RDS copies them on restore), then the template's on top. A
        # ``tierlift:kind`` describes the snapshot itself, not what is restored from it.
        tags = {
            k: v
            for k, v in _tags_list_to_dict(snapshot.tags).items()
            if not k.startswith("aws:") and k != "tierlift:kind"
        }
        tags.update(_tags_list_to_dict(properties.get("Tags")))
        subnet_group = properties.get("DBSubnetGroupName")
        overrides = {
            "db_instance_identifier": resource_name.replace("_", "-"),
            "db_instance_class": properties.get("DBInstanceClass"),
            "db_subnet_group_name": getattr(subnet_group, "name", subnet_group),
            "vpc_security_group_ids": properties.get("VPCSecurityGroups") or properties.get("VpcSecurityGroupIds"),
            "publicly_accessible": properties.get("PubliclyAccessible"),
            "copy_tags_to_snapshot": properties.get("CopyTagsToSnapshot"),
            "multi_az": properties.get("MultiAZ"),
            "tags": _dict_to_tags_list(tags),
        }
        return backend.restore_db_instance_from_db_snapshot(snapshot.db_snapshot_identifier, overrides)

    DBInstance.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]
    # apply()'s template fixes wrap whatever is installed: wrap them around the restore.
    global _applied
    _applied = False
    apply()

    # 2. DeletionPolicy: Snapshot leaves a final snapshot when the stack is deleted. -------------
    resource_map_delete = ResourceMap.delete

    def delete(self: Any) -> None:
        if not getattr(self, "_tierlift_rollback", False):
            for logical_id, resource_json in (self._resource_json_map or {}).items():
                if resource_json.get("DeletionPolicy") != "Snapshot":
                    continue
                if resource_json.get("Type") != "AWS::RDS::DBInstance":
                    continue
                instance = self._parsed_resources.get(logical_id)
                if instance is None or isinstance(instance, str):
                    continue
                backend = rds_backends[self._account_id][self._region_name]
                if instance.db_instance_identifier not in backend.databases:
                    continue
                stamp = utcnow().strftime("%Y%m%d%H%M%S")
                tags = _tags_list_to_dict(instance.tags)
                tags["tierlift:kind"] = FINAL_SNAPSHOT_KIND
                name = f"{instance.db_instance_identifier}-final-{stamp}"
                if name not in backend.database_snapshots:
                    backend.create_db_snapshot(instance.db_instance_identifier, name, tags=_dict_to_tags_list(tags))
        resource_map_delete(self)

    ResourceMap.delete = delete  # type: ignore[method-assign]

    # 3. A resource that cannot be created fails the stack, which rolls back. --------------------
    create_resources = Stack.create_resources

    def stack_create_resources(self: Any) -> None:
        options = getattr(_create_options, "value", None) or {}
        self._tierlift_token = options.get("token", "")
        if options.get("disable_rollback"):
            self.disable_rollback = True
        failure: str | None = None
        try:
            create_resources(self)
        except RestoreFailed as exc:
            failure = exc.reason
            # Mark the resource as absent so later lookups do not try to create it again.
            self.resource_map._parsed_resources[exc.logical_id] = None
            self._tierlift_failed_resource = exc.logical_id
            self.status = "CREATE_IN_PROGRESS"
        self._tierlift_failure = failure
        if observer is not None:
            observer.on_stack_created(self, failure)
            return
        if failure is not None:
            self._add_stack_event("CREATE_FAILED" if self.disable_rollback else "ROLLBACK_IN_PROGRESS", failure)
            if self.disable_rollback:
                self.status = "CREATE_FAILED"
                return
            roll_back_stack(self)
            self.status = "ROLLBACK_COMPLETE"
            self._add_stack_event("ROLLBACK_COMPLETE")

    Stack.create_resources = stack_create_resources  # type: ignore[method-assign]

    # CreateStack's ClientRequestToken (carried by every event of the operation) and OnFailure.
    from moto.cloudformation.responses import CloudFormationResponse

    response_create_stack = CloudFormationResponse.create_stack

    def create_stack_response(self: Any) -> Any:
        on_failure = self._get_param("OnFailure")
        disable = str(self._get_param("DisableRollback", "false")).lower() == "true"
        _create_options.value = {
            "token": self._get_param("ClientRequestToken") or "",
            "disable_rollback": on_failure == "DO_NOTHING" or (disable and on_failure is None),
        }
        try:
            return response_create_stack(self)
        finally:
            _create_options.value = None

    CloudFormationResponse.create_stack = create_stack_response  # type: ignore[method-assign]

    outputs_property = Stack.outputs

    def stack_outputs(self: Any) -> Any:
        # CloudFormation shows outputs only once the stack is created.
        if str(self.status).startswith(("CREATE_IN_PROGRESS", "CREATE_FAILED", "ROLLBACK")):
            return None
        if getattr(self, "_tierlift_failure", None):
            return None  # a failed create (now being deleted) has nothing to resolve its outputs from
        return outputs_property.fget(self)  # type: ignore[attr-defined]

    Stack.outputs = property(stack_outputs)  # type: ignore[method-assign,assignment]

    delete_stack = CloudFormationBackend.delete_stack

    def backend_delete_stack(self: Any, name_or_stack_id: str) -> None:
        stack = next(
            (s for s in self.stacks.values() if name_or_stack_id in (s.name, s.stack_id)),
            None,
        )
        if stack is None:
            return delete_stack(self, name_or_stack_id)
        if stack.status == "DELETE_IN_PROGRESS":
            return None
        if observer is not None and observer.on_stack_delete(stack):
            stack._add_stack_event("DELETE_IN_PROGRESS", resource_status_reason="User Initiated")
            stack.status = "DELETE_IN_PROGRESS"
            return None
        return delete_stack(self, stack.stack_id)

    CloudFormationBackend.delete_stack = backend_delete_stack  # type: ignore[method-assign]

    # 4. Snapshots and instances: tell the observer (which makes snapshots "creating" first). -----
    _notify_after(RDSBackend, "create_db_snapshot", "on_snapshot")
    _notify_after(RDSBackend, "delete_db_snapshot", "on_snapshot_deleted")
    # CopyDBSnapshot: moto honours KmsKeyId (the copy is Encrypted with that key, and a restore from it
    # takes the copy's encryption) but copies at once and emits no RDS-EVENT-0197: the observer makes the
    # copy "copying" first and emits the event when it is done.
    _notify_after(RDSBackend, "copy_db_snapshot", "on_snapshot_copied")
    _notify_after(RDSBackend, "delete_db_instance", "on_instance_deleted")

    # 5. ECS: keep deploymentConfiguration on create; a new task definition starts a new deployment.
    response_create_service = EC2ContainerServiceResponse.create_service

    def create_service_response(self: Any) -> Any:
        result = response_create_service(self)
        config = self._get_param("deploymentConfiguration")
        cluster = str(self._get_param("cluster", "default")).split("/")[-1]
        service = self.ecs_backend.services.get(f"{cluster}:{self._get_param('serviceName')}")
        if service is not None:
            service.deployment_configuration = config or {
                "deploymentCircuitBreaker": {"enable": False, "rollback": False},
                "maximumPercent": 200,
                "minimumHealthyPercent": 100,
            }
            if observer is not None and service.deployments:
                observer.on_deployment(service, service.deployments[0])
        return result

    EC2ContainerServiceResponse.create_service = create_service_response  # type: ignore[method-assign]

    update_service = EC2ContainerServiceBackend.update_service

    def backend_update_service(self: Any, service_properties: dict[str, Any]) -> Any:
        cluster = str(service_properties.get("cluster", "default")).split("/")[-1]
        name = str(service_properties.get("service", "")).split("/")[-1]
        force = bool(service_properties.get("force_new_deployment"))
        before = self.services.get(f"{cluster}:{name}")
        old_td = before.task_definition if before is not None else None
        service = update_service(self, service_properties)
        new_td = service.task_definition
        if service.deployment_controller.get("type", "ECS") != "ECS" or (new_td == old_td and not force):
            return service
        if force and new_td == old_td:
            # moto already gave the primary deployment a new id: treat it as a new deployment.
            deployment = service.deployments[0]
        else:
            now = utcnow()
            for old in service.deployments:
                if old.get("status") == "PRIMARY":
                    old["status"] = "ACTIVE"
                    old["updatedAt"] = now
            deployment_id = f"ecs-svc/{mock_random.randint(10**18, 10**19 - 1)}"
            deployment = {
                "id": deployment_id,
                "status": "PRIMARY",
                "taskDefinition": new_td,
                "desiredCount": service.desired_count,
                "pendingCount": service.desired_count,
                "runningCount": 0,
                "failedTasks": 0,
                "createdAt": now,
                "updatedAt": now,
                "launchType": service.launch_type,
                "platformVersion": service.platform_version,
                "platformFamily": "EC2" if service.launch_type == "EC2" else "FARGATE",
                "networkConfiguration": service.network_configuration or None,
                "rolloutState": "IN_PROGRESS",
                "rolloutStateReason": f"ECS deployment {deployment_id} in progress.",
            }
            service.deployments.insert(0, deployment)
        if observer is not None:
            observer.on_deployment(service, deployment)
        return service

    EC2ContainerServiceBackend.update_service = backend_update_service  # type: ignore[method-assign]

    # 6. EventBridge: a schedule rule has no pattern; moto treats that as "match every event". -----
    from moto.events.models import Rule

    send_to_targets = Rule.send_to_targets

    def rule_send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if self.scheduled_expression and not getattr(self.event_pattern, "_pattern", None):
            return  # only the schedule itself fires this rule
        send_to_targets(self, original_event, transform_input)

    Rule.send_to_targets = rule_send_to_targets  # type: ignore[method-assign]

    # 6b. A target without an input transformer gets the whole event; moto's default template leaves out
    # `account`, the account the event happened in (a cell's events, forwarded, carry the cell's). ------
    from moto.events.utils import EventTemplateParser

    template = EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE
    if '"account"' not in template:
        EventTemplateParser.DEFAULT_EVENT_INPUT_TEMPLATE = template.replace(
            '"version": "0",', '"version": "0", "account": "<account>",', 1
        )

    # 7. RDS DescribeAccountAttributes and DescribeDBEngineVersions: see apply_rds_reads. ---------
    apply_rds_reads()
    _gaps_applied = True


# What the emulated region offers per engine (DescribeDBEngineVersions); a version outside this list is
# one RDS has retired (or never had) in the region, which ``tierlift doctor`` reports.
OFFERED_ENGINE_VERSIONS: dict[str, tuple[str, ...]] = {
    "mysql": ("8.0.36", "8.0.37", "8.0.39", "8.0.40", "8.0.41", "8.4.3", "8.4.4"),
    "postgres": ("15.10", "16.6", "17.2"),
}
_rds_reads_applied = False


def apply_rds_reads() -> None:
    """RDS reads moto lacks (its server answers them with an HTML 404, ``mock_aws`` raises
    NotImplementedError): DescribeAccountAttributes (the account's quotas, from what exists) and
    DescribeDBEngineVersions (:data:`OFFERED_ENGINE_VERSIONS`). Read-only; safe to call more than once."""
    global _rds_reads_applied
    if _rds_reads_applied:
        return
    from moto.core.responses import ActionResult
    from moto.rds.responses import RDSResponse

    def describe_account_attributes(self: Any) -> Any:
        backend = self.backend
        manual = [s for s in backend.database_snapshots.values() if s.snapshot_type == "manual"]
        storage = sum(int(getattr(d, "allocated_storage", 0) or 0) for d in backend.databases.values())
        quotas = [
            ("DBInstances", len(backend.databases), 40),
            ("ManualSnapshots", len(manual), 100),
            ("AllocatedStorage", storage * 1024**3, 100000 * 1024**3),
            ("DBSubnetGroups", len(backend.subnet_groups), 50),
        ]
        return ActionResult(
            {"AccountQuotas": [{"AccountQuotaName": n, "Used": used, "Max": most} for n, used, most in quotas]}
        )

    def describe_db_engine_versions(self: Any) -> Any:
        engine = self._get_param("Engine")
        version = self._get_param("EngineVersion")
        found = [
            {
                "Engine": name,
                "EngineVersion": offered,
                "DBParameterGroupFamily": f"{name}{'.'.join(offered.split('.')[:2])}",
                "Status": "available",
            }
            for name, versions in OFFERED_ENGINE_VERSIONS.items()
            if not engine or engine == name
            for offered in versions
            if not version or version == offered
        ]
        return ActionResult({"DBEngineVersions": found})

    RDSResponse.describe_account_attributes = describe_account_attributes  # type: ignore[attr-defined]
    RDSResponse.describe_db_engine_versions = describe_db_engine_versions  # type: ignore[attr-defined]
    _rds_reads_applied = True


def _associate_route_tables_from_cfn() -> None:
    """moto's AWS::EC2::SubnetRouteTableAssociation records the pair but never associates the subnet
    with the route table (DescribeRouteTables shows the VPC's main table for it): associate it, as
    EC2 does, so a subnet's routes (its NAT, the S3 gateway endpoint) are those of its template."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.subnets import SubnetRouteTableAssociation

    original = _require(SubnetRouteTableAssociation, "create_from_cloudformation_json").__func__
    if getattr(original, "_tierlift", False):
        return

    def create_from_cloudformation_json(
        cls: Any, resource_name: str, cloudformation_json: Any, account_id: str, region_name: str, **kwargs: Any
    ) -> Any:
        created = original(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        properties = cloudformation_json["Properties"]
        ec2_backends[account_id][region_name].associate_route_table(
            properties["RouteTableId"], subnet_id=properties["SubnetId"]
        )
        return created

    create_from_cloudformation_json._tierlift = True  # type: ignore[attr-defined]
    SubnetRouteTableAssociation.create_from_cloudformation_json = classmethod(create_from_cloudformation_json)  # type: ignore[method-assign,assignment]


_cell_roles_applied = False


def apply_cell_roles() -> None:
    """AWS's refusal of ``sts:AssumeRole`` into a cell, which moto never refuses (any ARN switches
    accounts): assuming a ``tierlift-cell*`` role is refused with ``AccessDenied`` when the role does not
    exist in its account, or when its trust policy's ``sts:ExternalId`` condition does not match the
    external id given. Other roles are assumed as moto does. Safe to call more than once."""
    global _cell_roles_applied
    if _cell_roles_applied:
        return
    from moto.iam.models import iam_backends
    from moto.sts.exceptions import STSClientError
    from moto.sts.models import STSBackend

    original = _require(STSBackend, "assume_role")

    def assume_role(
        self: Any, region_name: str, role_session_name: str, role_arn: str, *args: Any, **kwargs: Any
    ) -> Any:
        external_id = kwargs.get("external_id", args[3] if len(args) > 3 else None)
        parts = role_arn.split(":")
        if len(parts) == 6 and parts[5].rsplit("/", 1)[-1].startswith("tierlift-cell"):
            account, name = parts[4], parts[5].rsplit("/", 1)[-1]
            role = next((r for r in iam_backends[account]["global"].roles.values() if r.name == name), None)
            denied = f"User is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
            if role is None:
                raise STSClientError("AccessDenied", denied)
            trust = role.assume_role_policy_document
            document = json.loads(trust) if isinstance(trust, str) else (trust or {})
            for statement in document.get("Statement", []):
                wanted = statement.get("Condition", {}).get("StringEquals", {}).get("sts:ExternalId")
                if wanted is not None and wanted != external_id:
                    raise STSClientError("AccessDenied", denied)
        return original(self, region_name, role_session_name, role_arn, *args, **kwargs)

    STSBackend.assume_role = assume_role  # type: ignore[method-assign]
    _cell_roles_applied = True
