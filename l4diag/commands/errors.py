"""The central error handler: turns exceptions into one-line messages and exit codes."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from ..baseline import BaselineError
from ..rules import RulesError
from ..sources import InputError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A bad option value or combination."""


@contextlib.contextmanager
def error_handler(exit_codes: list) -> Iterator:
    """Run a command body; map known errors to exit code 2 with a one-line message on stderr."""
    try:
        yield
    except (InputError, RulesError, BaselineError, UsageError) as exc:
        print(f"l4diag: error: {exc}", file=sys.stderr)
        exit_codes.append(EXIT_USAGE)
    except KeyboardInterrupt:
        print("l4diag: interrupted", file=sys.stderr)
        exit_codes.append(EXIT_INTERRUPTED)
    except BrokenPipeError:
        exit_codes.append(EXIT_OK)
    except Exception as exc:  # noqa: BLE001 - never a traceback for the user; L4DIAG_DEBUG=1 shows it
        if os.environ.get("L4DIAG_DEBUG"):
            raise
        message = f"{type(exc).__name__}: {exc}".replace("\n", " ")
        message = "".join(ch if ch.isprintable() else "?" for ch in message)[:500]
        print(f"l4diag: internal error: {message} (rerun with L4DIAG_DEBUG=1 for a traceback)", file=sys.stderr)
        exit_codes.append(EXIT_USAGE)
