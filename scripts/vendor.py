"""Build ``vendor/``: what ``chalice package`` adds to the Lambda zip besides app.py and chalicelib.

1. Powertools for AWS Lambda (Python), aws-xray-sdk (its Tracer's backend), wrapt and typing_extensions,
   installed with ``--no-deps`` for the Lambda platform (boto3/botocore/jmespath come with the runtime:
   listing these in requirements.txt would add a second botocore, ~17 MB).
2. Pruned to what tierlift imports: Powertools' Logger, Metrics and Tracer (not its event handler, parser,
   idempotency... utilities), the X-Ray SDK's core and its botocore patch (not its Django, Flask,
   SQLAlchemy... integrations). That keeps the zip under 1 MB.
3. Compiled to bytecode with *checked-hash* ``.pyc`` files, for the vendored packages and for the files
   Chalice copies itself (app.py, chalicelib, chalice's runtime). Lambda unpacks the zip read-only with
   1980 timestamps, so the ordinary timestamp ``.pyc`` never matches and every cold start would compile
   every module from source again; a checked-hash ``.pyc`` is used whenever its source's hash matches,
   and ignored (the source compiled, as before) when it does not, so a stale one is never run.

``python scripts/vendor.py [--target vendor]``; ``make vendor`` and ``make package`` run it.
"""

from __future__ import annotations

import argparse
import importlib.util
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Pinned with requirements-dev.txt (tests run the same versions). wrapt 1.17, not 2.x: wrapt 2 imports
# asyncio when it is imported, ~13 ms of CPU at every cold start (docs/performance.md, "Cold start").
PACKAGES = ("aws-lambda-powertools==3.37.0", "aws-xray-sdk==2.15.0", "wrapt==1.17.3", "typing_extensions==4.16.0")
PLATFORM = "manylinux2014_x86_64"  # the functions' architecture (x86_64, Chalice's default)

KEEP = {
    "aws_lambda_powertools": {
        "__init__.py",
        "package_logger.py",
        "py.typed",
        "exceptions",
        "warnings",
        "shared",
        "logging",
        "metrics",
        "tracing",
        "middleware_factory",
        "utilities/__init__.py",
        "utilities/jmespath_utils",
        "utilities/typing",
    },
    "aws_xray_sdk": {
        "__init__.py",
        "version.py",
        "sdk_config.py",
        "core",
        "ext/__init__.py",
        "ext/util.py",
        "ext/boto_utils.py",
        "ext/botocore",
        "ext/resources",
    },
}
DROP = ("wrapt-stubs",)
DROP_SUFFIXES = (".pyi", ".c", ".h")


def install(target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--only-binary=:all:",
            "--platform",
            PLATFORM,
            "--implementation",
            "cp",
            "--python-version",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            "--target",
            str(target),
            *PACKAGES,
        ],
        check=True,
    )


def _kept(relative: Path, keep: set[str]) -> bool:
    text = relative.as_posix()
    return any(text == k or text.startswith(k + "/") or k.startswith(text + "/") for k in keep)


def prune(target: Path) -> None:
    for package, keep in KEEP.items():
        base = target / package
        for path in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if not path.exists():
                continue
            if not _kept(path.relative_to(base), keep):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name in DROP:
        shutil.rmtree(target / name, ignore_errors=True)
    for cache in list(target.rglob("__pycache__")):
        shutil.rmtree(cache)
    for path in [p for p in target.rglob("*") if p.is_file() and p.suffix in DROP_SUFFIXES]:
        path.unlink()  # type stubs and wrapt's C source (its compiled extension stays)
    for record in target.glob("*.dist-info/RECORD"):
        record.unlink()  # lists the pruned files; nothing installs or uninstalls from a Lambda zip
    strip = shutil.which("strip")
    for library in target.rglob("*.so"):
        # Debugging symbols: wrapt's extension is 624 KB with them, 89 KB without (as the Powertools
        # layer does it). Without binutils the zip is ~140 KB larger but works the same.
        if strip:
            subprocess.run([strip, str(library)], check=True)
        else:
            print(f"strip (binutils) not found: {library.name} keeps its debugging symbols", file=sys.stderr)


def _compile(source: Path, cfile: Path, shown_as: str) -> None:
    py_compile.compile(
        str(source),
        cfile=str(cfile),
        dfile=shown_as,
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )


def compile_all(target: Path) -> int:
    """Checked-hash .pyc for every vendored module, chalicelib, app.py and chalice's runtime."""
    count = 0
    for source in target.rglob("*.py"):
        _compile(source, Path(importlib.util.cache_from_source(str(source))), str(source.relative_to(target)))
        count += 1
    # chalicelib: Chalice zips the directory as it is, __pycache__ included, so its bytecode is written
    # in place (replacing the timestamp .pyc files tests leave there, which Lambda would ignore).
    lib = ROOT / "chalicelib"
    for cache in list(lib.rglob("__pycache__")):
        shutil.rmtree(cache)
    for source in sorted(lib.rglob("*.py")):
        _compile(source, Path(importlib.util.cache_from_source(str(source))), source.relative_to(ROOT).as_posix())
        count += 1
    # app.py and chalice's runtime are added by Chalice file by file: their bytecode goes in vendor/.
    import chalice
    import chalice.app

    own = [(ROOT / "app.py", "app.py")]
    own += [(Path(chalice.app.__file__), "chalice/app.py"), (Path(chalice.__file__), "chalice/__init__.py")]
    for source, zip_path in own:
        _compile(source, target / importlib.util.cache_from_source(zip_path), zip_path)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=Path, default=ROOT / "vendor")
    args = parser.parse_args(argv)
    install(args.target)
    prune(args.target)
    count = compile_all(args.target)
    size = sum(p.stat().st_size for p in args.target.rglob("*") if p.is_file())
    print(f"{args.target}: {count} modules compiled, {size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
