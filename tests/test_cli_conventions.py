"""The CLI's conventions (issue 20, items 3-5): it never guesses a flag, helps on a bare call and on every
command with its exit codes, stops quietly on a closed pipe, gives every command ``--output table|json``
(snake_case keys, nulls, ISO-8601 UTC times); rejection texts say what happened and what to do, in the
CLI's words; the local cloud's output is one that can be read (and eval'd)."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.model import DeployEntry, EnvRecord, Promotion, Request
from chalicelib.domain.names import Namespace
from tests.test_cli import run
from tierlift import cli
from tierlift.errors import ExitCode, OperatorError
from tierlift.local.timeline import WIDTH, Entry, Timeline
from tierlift.output import iso, json_text

REPO = Path(__file__).resolve().parents[1]
NS = Namespace.parse("xy-0146-prod")


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command (path, parser), groups included, from the top."""
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out.extend(leaves(child, (*path, name)))
    return out


# item 3: no guesses, help, exit codes, closed pipes, --output -----------------------------------------
def test_no_parser_takes_an_abbreviated_flag() -> None:
    commands = leaves(cli.parser())
    assert len(commands) > 15 and all(not p.allow_abbrev for _, p in commands)


def test_promote_ver_is_refused_not_taken_for_version() -> None:
    result = run("promote", "xy-0146", "qa", "--ver", "20261128070000", "--endpoint-url", "http://127.0.0.1:1")
    assert result.returncode == ExitCode.USAGE  # refused before anything is sent (the endpoint is unreachable)
    assert "unrecognized arguments: --ver 20261128070000" in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["promote", "xy-0146", "qa", "--promotion", "ci-1"])


@pytest.mark.parametrize("group", [(), ("local",), ("tenant",), ("dlq",)])
def test_a_bare_call_prints_the_help_with_the_exit_codes(group: tuple[str, ...]) -> None:
    result = run(*group)
    assert result.returncode == ExitCode.USAGE and result.stderr == ""
    assert result.stdout.startswith(f"usage: tierlift {' '.join(group)}".rstrip()) and "exit codes:\n" in result.stdout


def test_every_command_documents_its_exit_codes_and_takes_output_json() -> None:
    top = cli.parser()
    for path, parser in leaves(top):
        text = parser.format_help()
        assert "exit codes:\n" in text and "141 the output pipe closed" in text, path
        assert "--output {table,json}" in text, path
        assert "``" not in text and ":class:" not in text and ":mod:" not in text, path  # no raw reST
        if not path:
            continue
        positionals = [a for a in parser._actions if not a.option_strings and a.nargs is None]
        values = {"tenant": "xy-0146", "environment": "qa", "file": "x.json", "name": "carol"}
        args = top.parse_args([*path, *(values[a.dest] for a in positionals), "--output", "json"])
        assert args.output == "json", path


def test_the_wait_exit_codes_are_in_the_help_of_the_commands_that_wait() -> None:
    for command in ("promote", "approve", "cancel", "rollback"):
        text = run(command, "--help").stdout
        assert "10 rejected, 11 failed, 12 rolled back, 13 cancelled, 14 timed out" in text, command
    assert "--wait: 11 Snapshot Failed" in run("snapshot", "--help").stdout
    assert "4 what the config names does not exist" in run("tenant", "register", "--help").stdout


def test_a_closed_pipe_stops_quietly() -> None:
    """``tierlift … | head``: the reader goes away first; no 'unexpected BrokenPipeError', no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TIERLIFT_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "tierlift", "local", "env", "--port", "4999"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before the child writes a byte
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == ExitCode.CLOSED_PIPE
    assert stderr == ""


def test_json_is_snake_case_with_nulls_and_iso_utc_times() -> None:
    when = datetime(2026, 11, 28, 7, 10, 5, 123456, tzinfo=UTC)
    assert iso(when) == "2026-11-28T07:10:05Z" and iso("2026-11-28T08:10:05+01:00") == "2026-11-28T07:10:05Z"
    assert json.loads(json_text({"at": when, "none": None})) == {"at": "2026-11-28T07:10:05Z", "none": None}


def test_promote_with_a_promotion_id_prints_snake_case_json(
    world: Any, aws: Any, outbox: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["promote", "xy-0146", "qa", "--promotion-id", "ci-build-42", "--output", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["promotion_id"] == "ci-build-42" and data["detail_type"] == "Promotion Requested"
    assert set(data) == {"event_id", "detail_type", "promotion_id", "namespace", "tenant", "environment"}
    [sent] = outbox.drain()
    assert sent["detail"]["promotion_id"] == "ci-build-42" and sent["id"] == data["event_id"]
    assert sent["detail"]["requested_at"].endswith("+00:00")
    code = cli.main(["promote", "xy-0146", "qa", "--promotion-id", "no spaces"])
    assert code == ExitCode.USAGE and "--promotion-id 'no spaces'" in capsys.readouterr().err


class Store:
    """``StateStore.read`` answers in turn (the promotion restoring, then at the gate)."""

    def __init__(self, answers: list[EnvRecord]) -> None:
        self.answers, self.reads = answers, 0

    def read(self, ns: Namespace) -> EnvRecord:
        self.reads += 1
        return self.answers[min(self.reads, len(self.answers)) - 1]


def test_approve_wait_waits_for_the_gate(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli.time, "sleep", lambda _: None)
    request = Request("p-1", "xy-0146", "prod", "20261128070000", started="2026-11-28T07:00:00+00:00")
    restoring = EnvRecord(NS, promotion=Promotion(request), config_path="x")
    gate = DeployEntry(1, "2026-11-28T07:05:00+00:00", awaiting=True)
    awaiting = EnvRecord(NS, promotion=Promotion(request, (gate,)), config_path="x")
    args = argparse.Namespace(output="table", timeout=60.0, poll=0.5, promotion_id=None)
    store = Store([restoring, restoring, awaiting])
    found = cli._wait_for_gate(args, store, NS, restoring.promotion)  # type: ignore[arg-type]
    assert found is not None and found.stage == "awaiting_approval" and store.reads == 3
    assert "waiting for p-1 in xy-0146-prod to reach the approval gate (restoring)" in capsys.readouterr().out
    # It ended before reaching the gate: the caller follows it to its end.
    ended = cli._wait_for_gate(args, Store([EnvRecord(NS, config_path="x")]), NS, restoring.promotion)  # type: ignore[arg-type]
    assert ended is None and args.promotion_id == "p-1"
    with pytest.raises(OperatorError) as timed_out:
        cli._wait_for_gate(
            argparse.Namespace(output="table", timeout=0.0, poll=0.5, promotion_id=None),
            Store([restoring]),  # type: ignore[arg-type]
            NS,
            restoring.promotion,  # type: ignore[arg-type]
        )
    assert timed_out.value.code == ExitCode.TIMED_OUT


def test_approve_without_wait_says_approve_wait_exists(
    world: Any, aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["approve", "xy-0146", "qa"])
    err = capsys.readouterr().err
    assert code == ExitCode.REFUSED and "qa of xy-0146 does not require approval" in err


def test_sweep_prints_a_table_or_json() -> None:
    data = {
        "dry_run": True,
        "tenant": "xy-0146",
        "namespaces": 2,
        "stacks": 3,
        "snapshots": 4,
        "seconds": 0.1,
        "actions": [{"status": "planned", "kind": "delete_stack", "target": "xy-0146-qa-db-1", "reason": "orphan"}],
        "errors": [],
    }
    lines = cli.sweep_table(data).splitlines()
    assert lines[0].startswith("dry run (nothing changed) of tenant xy-0146: 2 environment(s), 3 stack(s)")
    assert lines[1].split() == ["STATUS", "KIND", "TARGET", "REASON"]
    assert lines[2].split() == ["planned", "delete_stack", "xy-0146-qa-db-1", "orphan"]
    assert cli.sweep_table({**data, "actions": []}).splitlines()[-1] == "nothing to do"


# item 4: rejection texts ------------------------------------------------------------------------------
PYTHON_WORDS = re.compile(r"\b(NoneType|None|int|str|dict|list|bool|KeyError|ValueError|TypeError)\b")


def rejection(pipeline: Any, outbox: Any, detail: dict[str, Any]) -> dict[str, Any]:
    event = pipeline.events.promotion_requested()
    event["detail"] = detail
    outbox.drain()
    pipeline.invoke("promotion_requested", event)
    [answer] = [e for e in outbox.drain() if e["detail-type"] == "Promotion Rejected"]
    return dict(answer["detail"])


@pytest.mark.parametrize(
    ("detail", "says"),
    [
        ({"tenant": "xy-0146"}, "environment is missing"),
        ({"environment": "qa"}, "tenant is missing"),
        ({"tenant": 146, "environment": "qa"}, "tenant must be a string, got a number"),
        ({"tenant": "xy-0146", "environment": ["qa"]}, "environment must be a string, got an array"),
        ({"tenant": "zz-9999", "environment": "qa"}, "register it (tierlift tenant register FILE)"),
        ({"tenant": "xy-0146", "environment": "staging"}, "not in tenant xy-0146's config (its targets: qa, prod)"),
        ({"tenant": "xy-0146", "environment": "qa"}, "take one with tierlift snapshot xy-0146 --wait"),
        ({"tenant": "xy-0146", "environment": "prod"}, "promote one there first (tierlift promote xy-0146 qa)"),
        ({"tenant": "xy-0146", "environment": "qa", "version": "20261127200000"}, "(--version VERSION)"),
    ],
)
def test_a_rejection_says_what_happened_and_what_to_do(
    pipeline: Any, outbox: Any, detail: dict[str, Any], says: str
) -> None:
    answer = rejection(pipeline, outbox, detail)
    assert says in answer["reason"], answer
    assert not PYTHON_WORDS.search(answer["reason"]), answer["reason"]
    # A field the request did not carry is not in its answer: nothing invented ("None", "xy-0146-").
    for key in ("tenant", "environment"):
        if not isinstance(detail.get(key), str):
            assert key not in answer
    assert "None" not in json.dumps(answer)


def test_already_active_says_there_is_nothing_to_do(pipeline: Any, outbox: Any) -> None:
    version = "20261127200000"
    pipeline.snapshot(version)
    pipeline.promote(version)
    answer = rejection(pipeline, outbox, {"tenant": "xy-0146", "environment": "qa", "version": version})
    assert answer["reason"].startswith(f"version {version} is already active: nothing to do")
    assert "promote another version (--version VERSION)" in answer["reason"]


# item 5: the local cloud's output ---------------------------------------------------------------------
def test_the_export_hint_is_complete_and_can_be_evald() -> None:
    line = cli.export_line("http://127.0.0.1:4566", "eu-west-1", "tierlift-dev")
    script = f'{line}; printf "%s|" "$AWS_ENDPOINT_URL" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" '
    script += '"$AWS_DEFAULT_REGION" "$TIERLIFT_EVENT_BUS"'
    out = subprocess.run(
        ["bash", "-c", f"eval \"$(cat <<'EOF'\n{line}\nEOF\n)\"; {script}"], capture_output=True, text=True
    )
    assert out.stdout == "http://127.0.0.1:4566|testing|testing|eu-west-1|tierlift-dev|", out.stderr
    result = run("local", "env", "--port", "4999")
    assert result.returncode == 0
    values = subprocess.run(
        ["bash", "-c", f"eval {json.dumps(result.stdout.strip())}; echo $AWS_ENDPOINT_URL $AWS_DEFAULT_REGION"],
        capture_output=True,
        text=True,
    )
    assert values.stdout.split() == ["http://127.0.0.1:4999", "us-east-1"]


def test_heartbeats_are_folded_into_one_line_a_minute(capsys: pytest.CaptureFixture[str]) -> None:
    timeline = Timeline(echo=True)
    schedule = {"source": "aws.events", "detail-type": "Scheduled Event", "resources": ["arn:x:rule/sweep"]}
    for _ in range(3):
        timeline.event(schedule)
        timeline.add("handler", "λ sweep", "sweep", detail="nothing to do", quiet=True)
    timeline.add("handler", "λ promotion_requested", "start", "xy-0146-qa", "environment free")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1 and "λ promotion_requested" in printed[0]
    timeline.FOLD_SECONDS = 0.0  # the minute is over
    timeline.add("handler", "λ snapshot_schedule", "schedule", detail="0 requested", quiet=True)
    (fold,) = capsys.readouterr().out.splitlines()
    assert "heartbeats, nothing to do" in fold and "-v shows them" in fold
    assert "snapshot_schedule x1" in fold and "sweep x3" in fold and "schedule sweep x3" in fold
    assert len(timeline.snapshot()) == 8  # all kept
    verbose = Timeline(echo=True, verbose=True)
    verbose.add("handler", "λ sweep", "sweep", quiet=True)
    assert "λ sweep" in capsys.readouterr().out


def test_timeline_lines_fit_120_columns() -> None:
    long = Entry(
        1234.5,
        "handler",
        "aws.cloudformation: DbInstance UPDATE_COMPLETE_CLEANUP_IN_PROGRESS and more",
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
        "xy-0146-prod-with-a-long-name",
        "x" * 300,
    )
    lines = long.line().splitlines()
    assert len(lines) > 1 and all(len(line) <= WIDTH for line in lines)
    assert "".join(line.strip() for line in lines if set(line.strip()) == {"x"}) == "x" * 300  # nothing lost
    assert "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS and more" in long.line()  # nor of the other columns
    assert len(Timeline.header()) <= WIDTH
    short = Entry(1.0, "handler", "λ sweep", "sweep", "-", "ok").line()
    assert "\n" not in short and short.endswith("  ok")


def test_an_event_no_handler_listens_to_is_marked_no_rule_matched() -> None:
    timeline = Timeline()
    typo = {"source": "tierlift", "detail-type": "Promotion Requestd", "detail": {"tenant": "xy-0146"}}
    entry = timeline.event(typo, unrouted="tierlift-dev")
    assert (
        entry.stage == "no rule matched" and "'Promotion Requestd'" in entry.detail and "tierlift-dev" in entry.detail
    )
    json_line = Timeline(echo=False, as_json=True)._printed(entry)
    assert json_line is not None and json.loads(json_line)["detail_type"] == "Promotion Requestd"


def test_the_readme_says_the_local_cloud_keeps_its_state_in_memory() -> None:
    text = " ".join((REPO / "README.md").read_text().split())
    assert "Its state lives in memory: everything it holds (stacks, databases, parameters, the ledger) is gone" in text
    assert "## Register your own tenant" in text and "tierlift local bootstrap --tenant xy-0146 --approval prod" in text


# item 6: the bootstrap the README runs promotes qa automatically -------------------------------------
def test_local_bootstrap_promotes_qa_automatically_unless_told_otherwise() -> None:
    parse = cli.parser().parse_args
    assert parse(["local", "bootstrap"]).automatic == ["qa"] and not parse(["local", "bootstrap"]).no_automatic
    assert parse(["local", "bootstrap", "--automatic", "qa", "prod"]).automatic == ["qa", "prod"]
    assert parse(["local", "bootstrap", "--no-automatic"]).no_automatic
    bare = run("local", "bootstrap", "--automatic")  # used to mean "none": now refused, never guessed
    assert bare.returncode == ExitCode.USAGE and "expected at least one argument" in bare.stderr
