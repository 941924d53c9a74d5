"""The Lambda wing stays lean: it imports only the runtime's boto3/botocore, aws-xray-sdk and Chalice."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_FILES = [ROOT / "app.py", *sorted((ROOT / "chalicelib").glob("*.py"))]
ALLOWED_THIRD_PARTY = {"boto3", "botocore", "chalice", "aws_xray_sdk"}
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


@pytest.mark.parametrize("path", LAMBDA_FILES, ids=lambda p: p.name)
def test_lambda_wing_imports(path):
    import sys

    imported = _imports(path)
    assert not imported & FORBIDDEN, f"{path.name} imports {imported & FORBIDDEN}"
    third_party = {
        name for name in imported if name not in sys.stdlib_module_names and name not in {"chalicelib", "app"}
    }
    assert third_party <= ALLOWED_THIRD_PARTY, f"{path.name} needs {third_party - ALLOWED_THIRD_PARTY}"


def test_requirements_hold_only_runtime_dependencies():
    lines = [
        line.split("==")[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines == ["wrapt"]  # aws-xray-sdk is vendored with --no-deps (see docs/deploy.md)


def test_the_template_ships_inside_chalicelib():
    packaged = ROOT / "chalicelib" / "templates" / "database.yaml"
    assert packaged.is_file() and not packaged.is_symlink()
    assert (ROOT / "templates" / "database.yaml").resolve() == packaged.resolve()
