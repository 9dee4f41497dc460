"""What the command-line tools share: one-line errors for user mistakes, argument types, the torch device."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch


class UserError(Exception):
    """A mistake in what the user asked for: reported in one line, without a traceback."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` parser whose usage errors are one line (argparse's default prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: Largest seed accepted: the env seeds are the seed plus offsets (one per env, evaluation, resume), and NumPy and
#: gymnasium take seeds below 2**32.
MAX_SEED = 2**31 - 1
#: The ``--device`` values: what SB3 can train on without extra packages.
DEVICE_TYPES = ("cpu", "cuda", "mps")


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
    if text == "auto":
        return text
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in DEVICE_TYPES:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")
    return text


def resolve_device(requested: str, prog: str) -> str:
    """The device training or evaluation will really use, warning in one line when it is not the one asked for.

    SB3 silently falls back to the CPU when CUDA is missing; the run's config must record where it really ran.

    :param requested: a value accepted by :func:`device`
    :param prog: the program's name, for the warning
    :return: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``
    """
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = torch.device(requested).type
    problem = None
    if kind == "cuda" and not torch.cuda.is_available():
        problem = "no CUDA GPU is available"
    elif kind == "cuda" and (index := torch.device(requested).index) is not None:
        if index >= torch.cuda.device_count():
            problem = f"there is no CUDA device {index} (found {torch.cuda.device_count()})"
    elif kind == "mps" and not torch.backends.mps.is_available():
        problem = "MPS is not available"
    if problem is None:
        return requested
    print(f"{prog}: warning: --device {requested}: {problem}; using the CPU", file=sys.stderr)
    return "cpu"


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
