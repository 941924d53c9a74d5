"""Cold ``import app`` in Lambda mode, as a ratio to a bare ``import boto3`` measured in the same run.

The deployment zip (``make package``) is unpacked as Lambda unpacks it (every file dated 1980, nothing
writable: ``-B``), the SDK the Lambda runtime provides (boto3, botocore and their dependencies) is put
after it on the path, and nothing else: no site-packages (``-S``), so a module missing from the zip
fails here as it would in Lambda. ``AWS_LAMBDA_FUNCTION_NAME`` and ``LAMBDA_TASK_ROOT`` are set, so
``app`` runs its Lambda set-up: X-Ray patching of botocore through Powertools' Tracer, JSON logs, metrics.

Each sample is a fresh interpreter; the import is timed inside it (interpreter start-up, the same for
both, is left out). Samples of the two alternate, and the figures are medians. Lambda's ``_HANDLER`` is
set too (``app.<function>``): each function imports its own use case at init. A third sample per round
times what the handler still imports on its first call (its ``import`` statements, after ``import app``
in the same interpreter), so that nothing deferred to the first event goes unmeasured: "with first call"
is init plus that.

    make package && .venv/bin/python bench/cold_import.py            # promotion_requested, 15 samples
    .venv/bin/python bench/cold_import.py --function sweep --samples 9
    .venv/bin/python bench/cold_import.py --zip other.zip --json --no-check

Exits non-zero when the Lambda-mode import fails, loads an operator-only module, or (not the sweep)
loads the sweep's modules. It does not fail on the ratio: timings are for reading, not asserting.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_SDK = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six.py", "urllib3")
OPERATOR_ONLY = ("tierlift", "moto", "pytest", "tests", "bench")
SWEEP_ONLY = ("chalicelib.usecases.sweep", "chalicelib.domain.sweep_plan")

TIMED = """
import sys, time
{setup}
t, c = time.perf_counter(), time.process_time()
{statement}
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
print("\\n" + __import__("json").dumps({{"seconds": elapsed, "cpu": cpu, "modules": sorted(sys.modules)}}))
"""

# Exercise what the pruned vendored packages must still do, in the Lambda layout.
CHECK = """
import json, sys
import app
from chalicelib import observability
from aws_xray_sdk.core import xray_recorder
assert observability._tracer is not None, "tracing is off in Lambda mode"
from aws_xray_sdk.core.exceptions.exceptions import FacadeSegmentMutationException
with observability.traced("check", tenant="xy-0146") as span:  # in Lambda's facade segment
    span.annotate(version="20261127200000")
    sub = xray_recorder.current_subsegment()
    facade = xray_recorder.current_segment()
assert sub.name == "check" and sub.annotations == {"tenant": "xy-0146", "version": "20261127200000"}
try:
    facade.put_annotation("tenant", "xy-0146")
except FacadeSegmentMutationException:
    pass
else:
    raise AssertionError("the facade segment took an annotation: this is not Lambda's X-Ray context")
assert observability.metrics.enabled
observability.metrics.promotion_ended("xy-0146", "qa", "completed", 12.5)
import botocore.client
assert hasattr(botocore.client.BaseClient._make_api_call, "__wrapped__"), "botocore is not patched"
print("CHECK OK")
"""


def unpack(zip_path: Path, task: Path) -> None:
    """Unpack as Lambda does: each file keeps the zip's date (1980 for Chalice's zips)."""
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            archive.extract(info, task)
            stamp = time.mktime((*info.date_time, 0, 0, -1))
            os.utime(task / info.filename, (stamp, stamp))


def runtime_sdk(runtime: Path) -> None:
    """boto3 and its dependencies, as the Lambda runtime provides them (with their bytecode)."""
    site = Path(boto3.__file__).resolve().parents[1]
    runtime.mkdir()
    for name in RUNTIME_SDK:
        (runtime / name).symlink_to(site / name)


def environment(task: Path, runtime: Path, function: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "AWS_LAMBDA_FUNCTION_NAME": f"tierlift-dev-{function}",
        "_HANDLER": f"app.{function}",  # as Lambda sets it: the function's handler
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "LAMBDA_TASK_ROOT": str(task),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": f"{task}{os.pathsep}{runtime}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def first_call_imports(zip_path: Path, function: str) -> str:
    """The imports the handler of ``function`` makes when it is first called (``import`` statements in its
    body, read from the packaged ``app.py``; the REST API's ``app.app`` calls ``_signed``)."""
    with zipfile.ZipFile(zip_path) as archive:
        tree = ast.parse(archive.read("app.py"))
    name = "_signed" if function == "app" else function
    handler = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    statements = [ast.unparse(n) for n in ast.walk(handler) if isinstance(n, ast.Import | ast.ImportFrom)]
    return "; ".join(statements) or "pass"


def sample(statement: str, env: dict[str, str], cwd: Path, setup: str = "") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-S", "-B", "-c", TIMED.format(statement=statement, setup=setup)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{statement!r} failed in Lambda mode:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", type=Path, default=ROOT / "build" / "deployment.zip")
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--function", default="promotion_requested", help="the handler (app.<function>; app: the API)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--no-check", action="store_true", help="skip the functional check (older builds)")
    args = parser.parse_args(argv)
    if not args.zip.is_file():
        print(f"{args.zip} not found: run `make package` first", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="cold-import-") as tmp:
        task, runtime = Path(tmp) / "task", Path(tmp) / "runtime"
        unpack(args.zip, task)
        runtime_sdk(runtime)
        env = environment(task, runtime, args.function)

        trace = {"_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"}
        check = subprocess.run(
            [sys.executable, "-S", "-B", "-c", CHECK],
            env={**env, **trace},
            cwd=task,
            capture_output=True,
            text=True,
            check=False,
        )
        if not args.no_check and "CHECK OK" not in check.stdout:
            print(f"the packaged app does not work in Lambda mode:\n{check.stdout}\n{check.stderr}", file=sys.stderr)
            return 1

        # The handler's own imports on its first call, after `import app` in the same interpreter: what
        # Lambda's init left to the first event (nothing, when the function imports its use case at init).
        first_call = first_call_imports(args.zip, args.function)
        statements = {"import boto3": ("import boto3", ""), "import app": ("import app", "")}
        statements["+ first call"] = (first_call, "import app")
        runs: dict[str, dict[str, list[float]]] = {name: {"seconds": [], "cpu": []} for name in statements}
        modules: dict[str, list[str]] = {}
        for _ in range(args.samples):
            for label, (statement, setup) in statements.items():
                done = sample(statement, env, task, setup)
                runs[label]["seconds"].append(float(done["seconds"]))  # type: ignore[arg-type]
                runs[label]["cpu"].append(float(done["cpu"]))  # type: ignore[arg-type]
                modules[label] = list(done["modules"])  # type: ignore[call-overload]

    at_init = modules["import app"]
    after_first = modules["+ first call"]
    first_call_modules = sorted(set(after_first) - set(at_init))
    operator = sorted(m for m in after_first if m.split(".")[0] in OPERATOR_ONLY)
    sweep = sorted(m for m in after_first if m in SWEEP_ONLY)
    boto3_s, app_s, first_s = runs["import boto3"], runs["import app"], runs["+ first call"]
    ratio = statistics.median(app_s["seconds"]) / statistics.median(boto3_s["seconds"])
    cpu_ratio = statistics.median(app_s["cpu"]) / statistics.median(boto3_s["cpu"])
    # init + first call: each sample of `import app` with the first-call import of the same round
    total = {k: [a + f for a, f in zip(app_s[k], first_s[k], strict=True)] for k in ("seconds", "cpu")}
    total_ratio = statistics.median(total["seconds"]) / statistics.median(boto3_s["seconds"])
    total_cpu_ratio = statistics.median(total["cpu"]) / statistics.median(boto3_s["cpu"])
    result = {
        "zip": str(args.zip),
        "zip_bytes": args.zip.stat().st_size,
        "function": args.function,
        "samples": args.samples,
        "python": sys.version.split()[0],
        "import_boto3": {k: _summary(v) for k, v in boto3_s.items()},
        "import_app": {k: _summary(v) for k, v in app_s.items()},
        "ratio_median_wall": ratio,
        "ratio_median_cpu": cpu_ratio,
        "first_call_imports": first_call,
        "first_call": {k: _summary(v) for k, v in first_s.items()},
        "first_call_modules": first_call_modules,
        "ratio_with_first_call_median_wall": total_ratio,
        "ratio_with_first_call_median_cpu": total_cpu_ratio,
        "modules_loaded": len(at_init),
        "powertools_modules": sum(1 for m in at_init if m.startswith("aws_lambda_powertools")),
        "operator_only_loaded": operator,
        "sweep_modules_loaded": sweep,
    }
    print(f"cold import in Lambda mode, function {args.function}, {args.samples} fresh interpreters each")
    print(f"  zip                {result['zip_bytes']:,} bytes ({args.zip})")
    print("                     wall: median    min    max    cpu: median    min    max   (ms)")
    for label, figures in runs.items():
        wall, cpu = (sorted(v) for v in (figures["seconds"], figures["cpu"]))
        print(
            f"  {label:<18} {statistics.median(wall) * 1000:13.1f} {wall[0] * 1000:6.1f} {wall[-1] * 1000:6.1f}"
            f" {statistics.median(cpu) * 1000:13.1f} {cpu[0] * 1000:6.1f} {cpu[-1] * 1000:6.1f}"
        )
    print(f"  ratio app / boto3  {ratio:.2f}x wall, {cpu_ratio:.2f}x cpu (of the medians)")
    print(f"  with first call    {total_ratio:.2f}x wall, {total_cpu_ratio:.2f}x cpu (init + the handler's imports)")
    print(f"  modules loaded     {len(at_init)} ({result['powertools_modules']} of Powertools)")
    print(f"  first call adds    {len(first_call_modules)} modules ({first_call})")
    if args.json:
        print(json.dumps(result, indent=2))
    failed = bool(operator) or (args.function != "sweep" and bool(sweep))
    if operator:
        print(f"operator-only modules loaded: {operator}", file=sys.stderr)
    if args.function != "sweep" and sweep:
        print(f"the sweep's modules are loaded by {args.function}: {sweep}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
