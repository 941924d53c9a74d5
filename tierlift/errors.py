"""The operator command's exit codes (documented in docs/operations.md) and the error that carries one."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``tierlift`` exits with. Stable: scripts depend on them."""

    OK = 0  # done; with --wait: the promotion completed
    ERROR = 1  # an AWS error not listed below (the line says which)
    USAGE = 2  # a bad argument or name (argparse's own code too)
    NOT_FOUND = 3  # unknown tenant, environment not in its config, no such promotion or version
    REFUSED = 4  # refused before sending anything: nothing to approve or cancel, rollback snapshot gone
    NO_CREDENTIALS = 5  # no AWS credentials, or credentials the endpoint rejects
    UNREACHABLE = 6  # the endpoint cannot be reached
    REJECTED = 10  # --wait: Promotion Rejected
    FAILED = 11  # --wait: Promotion Failed
    ROLLED_BACK = 12  # --wait: Promotion Rolled Back
    CANCELLED = 13  # --wait: Promotion Cancelled
    TIMED_OUT = 14  # --wait: no outcome within --timeout (the promotion goes on)
    INTERRUPTED = 130  # Ctrl-C
    CLOSED_PIPE = 141  # the output's reader went away (tierlift ... | head), as a shell reports SIGPIPE


class OperatorError(Exception):
    """One clear line for the operator and the exit code that goes with it."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
