"""Helpers shared by the CLI tests."""

from click.testing import CliRunner

from reportgen.cli import main


def run(*args):
    """Invoke the CLI in-process; returns (exit code, stdout + stderr)."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def assert_one_line_error(output, *needles):
    """A user mistake: exactly one line, ``error: ...``, no traceback, naming each needle."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
