"""What every `lensbox` subcommand shares: exit codes and the one-line error format.

Errors go to stderr as ``lensbox: error: <what and how to fix it>`` so scripts and people
see the same shape whichever subcommand failed.
"""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def error(message: str) -> None:
    print(f"lensbox: error: {message}", file=sys.stderr)


def fail(message: str) -> int:
    """Report ``message`` and return the exit code for a failed command."""
    error(message)
    return EXIT_FAIL
