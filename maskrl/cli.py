"""What the command-line tools share: one-line errors and warnings for the user, argument types."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from maskrl.agents.training import RunWarning, check_device


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, without a traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose usage errors are one line (argparse's default prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: Largest seed accepted: the env seeds are the seed plus offsets (one per env, evaluation, resume), and NumPy and
#: gymnasium take seeds below 2**32.
MAX_SEED = 2**31 - 1


def integer(text: str) -> int:
    """``argparse`` type for an integer, also written ``1e5`` or ``100_000`` (step counts are large)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():  # also refuses inf and nan
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def positive_int(text: str) -> int:
    """``argparse`` type for a strictly positive integer (``1e5`` allowed)."""
    try:
        value = integer(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    """``argparse`` type for a random seed: an integer from 0 to :data:`MAX_SEED`."""
    try:
        value = integer(text)
    except argparse.ArgumentTypeError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text!r}")
    return value


def device(text: str) -> str:
    """``argparse`` type for a torch device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    try:
        return check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def run_cli(main: Callable[[], None], prog: str) -> None:
    """Run ``main``; a :class:`UserError` becomes ``prog: error: ...`` on stderr and exit status 2.

    The message is printed on one line whatever it holds: it may quote a file someone else made (a config value,
    a library's multi-line error about it), and one line is what scripts and the tests rely on. The library's
    :class:`~maskrl.agents.training.RunWarning` (a device that is not there, checkpoints about to be unpickled) is
    printed the same way, as ``prog: warning: ...``, each time it is given; other warnings are shown as usual.
    """
    with warnings.catch_warnings():
        show_other = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
            if issubclass(category, RunWarning):
                print(f"{prog}: warning: {' '.join(str(message).split())}", file=sys.stderr)
            else:
                show_other(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        warnings.simplefilter("always", RunWarning)
        try:
            main()
        except UserError as error:
            print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
            sys.exit(2)
