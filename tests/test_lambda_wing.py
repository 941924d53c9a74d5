"""The Lambda wing stays lean: it imports only the runtime's boto3/botocore, Chalice and the vendored
Powertools (with aws-xray-sdk behind its Tracer)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_FILES = [ROOT / "app.py", *sorted((ROOT / "chalicelib").rglob("*.py"))]
DOMAIN_FILES = sorted((ROOT / "chalicelib" / "domain").glob("*.py"))
ALLOWED_THIRD_PARTY = {"boto3", "botocore", "chalice", "aws_lambda_powertools", "aws_xray_sdk"}
FORBIDDEN = {"tierlift", "moto", "pytest", "tests", "bench"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", LAMBDA_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_lambda_wing_imports(path):
    import sys

    imported = _imports(path)
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
    third_party = {
        name for name in imported if name not in sys.stdlib_module_names and name not in {"chalicelib", "app"}
    }
    assert third_party <= ALLOWED_THIRD_PARTY, f"{path.name} needs {third_party - ALLOWED_THIRD_PARTY}"


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=lambda p: p.name)
def test_the_domain_imports_no_aws_sdk_no_chalice_and_no_adapter(path):
    """chalicelib/domain is plain Python: records, value objects, decisions. AWS lives in the adapters."""
    imported = _imports(path)
    assert not imported & {"boto3", "botocore", "chalice", "aws_lambda_powertools", "aws_xray_sdk"}, imported
    modules = {
        node.module
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chalicelib")
    }
    outside = {m for m in modules if not m.startswith("chalicelib.domain") and m != "chalicelib.settings"}
    assert not outside, f"{path.name} imports {outside}"


def test_the_domain_loads_without_the_aws_sdk():
    """Importing every domain module pulls in neither boto3, botocore nor chalice (transitively)."""
    code = (
        "import sys, json, importlib, pkgutil, chalicelib.domain as d\n"
        "[importlib.import_module('chalicelib.domain.' + m.name) for m in pkgutil.iter_modules(d.__path__)]\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'chalice'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_requirements_hold_only_runtime_dependencies():
    lines = [
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Powertools, aws-xray-sdk, wrapt and typing_extensions are vendored with --no-deps by
    # scripts/vendor.py: through requirements.txt they would bring a second botocore (~17 MB).
    assert lines == []


def _lambda_import(function: str) -> list[str]:
    """The modules a fresh interpreter holds after ``import app`` as Lambda function ``function``."""
    env = {
        **os.environ,
        "AWS_LAMBDA_FUNCTION_NAME": f"tierlift-dev-{function}",
        "_HANDLER": f"app.{function}",
        "LAMBDA_TASK_ROOT": str(ROOT),
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    code = "import sys, json, app; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_lambda_function_imports_nothing_operator_only_and_only_what_it_needs():
    modules = _lambda_import("promotion_requested")
    assert not [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert "chalicelib.usecases.requests" in modules and "aws_xray_sdk.ext.botocore.patch" in modules  # traced
    assert "chalicelib.usecases.sweep" not in modules and "chalicelib.domain.sweep_plan" not in modules
    assert "asyncio" not in modules  # wrapt 2 would import it (docs/performance.md, "Cold start")
    # each function imports its own use case at init, not the other functions' (app.USE_CASES)
    others = {"chalicelib.api", "chalicelib.usecases.rotation", "chalicelib.usecases.commands"}
    others |= {"chalicelib.usecases.stack_status", "chalicelib.usecases.snapshots", "chalicelib.usecases.schedules"}
    others |= {"chalicelib.adapters.scheduler", "chalicelib.domain.schedules"}  # the sweep's (deps.schedules)
    assert not others & set(modules), others & set(modules)
    sweep = _lambda_import("sweep")
    assert "chalicelib.usecases.sweep" in sweep and not [m for m in sweep if m.split(".")[0] in FORBIDDEN]
    assert "chalicelib.api" not in sweep and "chalicelib.adapters.scheduler" in sweep
    assert "chalicelib.usecases.rotation" in _lambda_import("secret_rotated")
    api = _lambda_import("app")  # the signed API (Chalice's APIHandler: handler app.app)
    assert "chalicelib.api" in api and "chalicelib.usecases.sweep" not in api


def test_each_function_imports_at_init_the_use_case_its_handler_calls():
    """app.USE_CASES names, per handler, the module imported at init: the one the handler imports."""
    import app

    tree = ast.parse((ROOT / "app.py").read_text())
    handlers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    functions = {h.name for h in app.app.event_sources} | {"app"}
    assert set(app.USE_CASES) == functions
    for function, module in app.USE_CASES.items():
        body = handlers["_signed" if function == "app" else function]
        imported = {n.module for n in ast.walk(body) if isinstance(n, ast.ImportFrom)}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(body) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert module in imported, (function, module, imported)


def test_the_template_ships_inside_chalicelib():
    packaged = ROOT / "chalicelib" / "templates" / "database.yaml"
    assert packaged.is_file() and not packaged.is_symlink()
    assert (ROOT / "templates" / "database.yaml").resolve() == packaged.resolve()
