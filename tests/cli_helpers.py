"""Helpers of the command-line tests: run a command in-process, and check a clean one-line error."""

from __future__ import annotations

from click.testing import CliRunner

from minicnn.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_clean_error(result, *fragments: str):
    """Non-zero exit, no traceback, and exactly one `Error: ...` line, the last line of the output."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an unhandled crash
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert lines[-1] == errors[0], f"the error message must be a single line:\n{result.output}"
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
