"""What the command-line tools share: one-line errors for user mistakes, argument types."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, without a traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose usage errors are one line (argparse's default prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text: str) -> int:
    """``argparse`` type for a strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def run_cli(main: Callable[[], None], prog: str) -> None:
    """Run ``main``; a :class:`UserError` becomes ``prog: error: ...`` on stderr and exit status 2.

    The message is printed on one line whatever it holds: it may quote a file someone else made (a config value,
    a library's multi-line error about it), and one line is what scripts and the tests rely on.
    """
    try:
        main()
    except UserError as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        sys.exit(2)
