"""The operator command's entry points and its failures: one line, a documented exit code, no traceback.

Run as subprocesses (no server needed): what the local cloud is needed for is in tests/e2e/test_operator.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tierlift.errors import ExitCode

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, executable: list[str] | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERLIFT_"))}
    clean.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_DEFAULT_REGION="us-east-1",
    )
    clean.update(env)
    return subprocess.run(
        [*(executable or [sys.executable, "-m", "tierlift"]), *args],
        cwd=REPO,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("tierlift: ")
    return lines[0]


def test_pyproject_declares_the_command_and_both_packages() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert data["build-system"]["build-backend"] == "setuptools.build_meta"
    assert data["project"]["scripts"] == {"tierlift": "tierlift.cli:main"}
    include = data["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {"tierlift", "chalicelib"} <= set(include)


def test_the_installed_command_runs() -> None:
    """``make`` installs the project into .venv (pip install -e .): the ``tierlift`` script is there."""
    script = Path(sys.executable).parent / "tierlift"
    assert script.exists(), "no tierlift script next to the interpreter: run make (it runs pip install -e .)"
    result = run("--help", executable=[str(script)])
    assert result.returncode == 0 and "usage: tierlift" in result.stdout
    assert "exit codes" in result.stdout


def test_python_dash_m_keeps_working() -> None:
    result = run("--help")
    assert result.returncode == 0 and "promote" in result.stdout and "history" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("promote", "XY", "qa"), ExitCode.USAGE, "is not <customer>-<project>"),
        (("promote", "xy-0146", "Not-An-Env"), ExitCode.USAGE, "environment"),
        (("promote", "xy-0146", "qa", "--version", "yesterday"), ExitCode.USAGE, "YYYYMMDDHHMMSS"),
        (("history", "xy-0146", "--since", "last week"), ExitCode.USAGE, "--since"),
    ],
)
def test_bad_input_is_a_usage_error(args: tuple[str, ...], code: ExitCode, says: str) -> None:
    result = run(*args, "--endpoint-url", "http://127.0.0.1:1")
    assert result.returncode == code
    assert says in one_line(result)


@pytest.mark.parametrize(
    "args",
    [
        ("status",),  # SSM first
        ("promote", "xy-0146", "qa", "--wait"),
        ("history", "xy-0146"),  # CloudWatch Logs first
    ],
)
def test_an_unreachable_endpoint(args: tuple[str, ...]) -> None:
    result = run(*args, "--endpoint-url", "http://127.0.0.1:1")
    assert result.returncode == ExitCode.UNREACHABLE
    assert "cannot reach http://127.0.0.1:1" in one_line(result)


def test_missing_credentials() -> None:
    result = run("status", "xy-0146")
    assert result.returncode == ExitCode.NO_CREDENTIALS
    assert "Unable to locate credentials" in one_line(result)


def test_an_unknown_profile_is_a_credentials_problem() -> None:
    result = run("status", "--profile", "nobody-has-this-profile")
    assert result.returncode == ExitCode.NO_CREDENTIALS
    assert "nobody-has-this-profile" in one_line(result)
