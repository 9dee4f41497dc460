"""Reading files that someone else may have made: bounded, pickle-free, and only inside their folder.

A run folder, a pretrained encoder or a dataset can come from anyone. Reading one must not run code (no pickles,
no imports; see ``docs/safe_loading.md``) and must not let a small file make us read or allocate without bound
(``/dev/zero`` behind a symlink, zip bombs, JSON or array headers that declare huge sizes, nesting that overflows
the interpreter's stack). The helpers here do the reading for :mod:`maskrl.agents.safe_load`, the trajectory
datasets and the pretrained encoders; each failure is an :class:`UntrustedFileError`, a ``ValueError`` in one line
that the command-line tools print as ``<prog>: error: ...`` (exit status 2).

The limits are module constants: far above what maskrl writes, far below what would hurt the machine.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_WEIGHTS_BYTES",
    "UntrustedFileError",
    "check_inside",
    "check_npz",
    "check_zip_members",
    "first_line",
    "load_state_dict_bytes",
    "parse_json",
    "read_bytes",
    "read_json",
    "read_zip_member",
]

#: JSON files and entries (a model zip's ``data``, checkpoint sidecars, ``encoder.json``).
MAX_JSON_BYTES = 64 << 20
#: A ``torch.save`` file of weights (``policy.pth``, ``encoder.pt``), uncompressed.
MAX_WEIGHTS_BYTES = 1 << 30
#: Entries of a zip: an SB3 model has 6, a torch file one per tensor plus 6, an ``.npz`` one per array.
MAX_ZIP_MEMBERS = 10_000
#: A member larger than :data:`_RATIO_FLOOR` may not be more than this many times smaller compressed: weights and
#: observations do not compress like that, a zip bomb does (deflate reaches ~1000:1 on zeros).
MAX_COMPRESSION_RATIO = 100
_RATIO_FLOOR = 1 << 20
#: Errors that reading a damaged or hostile zip raises: ``zipfile``'s own, ``zlib``'s for a broken deflate stream,
#: ``NotImplementedError`` for an unknown compression method, ``RuntimeError`` for an encrypted member.
ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    struct.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)


class UntrustedFileError(ValueError):
    """A file that is refused or cannot be read: missing, too large, outside its folder, malformed. One line."""


def check_inside(path: Path, folder: Path, what: str) -> Path:
    """Resolve ``path`` (following symlinks) and refuse it unless it stays inside ``folder``.

    A run folder is copied around as a whole: a symlink in it that leads out (to ``~/.ssh``, ``/dev/zero``, another
    run's model) is not part of what the user was given, so nothing is read through one.

    :param path: a file of ``folder`` (it may not exist)
    :param folder: the folder the file must stay in
    :param what: the file's role, for the error message
    :return: the resolved path
    :raises UntrustedFileError: if the resolved path is outside the resolved ``folder``
    """
    try:
        resolved = path.resolve()
        root = folder.resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop on older Pythons
        raise UntrustedFileError(f"cannot resolve {what} {str(path)!r}: {type(error).__name__}") from None
    if not resolved.is_relative_to(root):
        raise UntrustedFileError(
            f"refusing {what} {str(path)!r}: it is a symlink to {str(resolved)!r}, outside {str(root)!r}"
        )
    return resolved


def read_bytes(path: Path, limit: int, what: str) -> bytes:
    """Read a regular file of at most ``limit`` bytes.

    Reads at most ``limit + 1`` bytes whatever the file claims, so a device or a file that grows cannot make us
    read without end; a FIFO is refused before it is opened (opening one blocks).

    :raises UntrustedFileError: for a missing file, one that is not a regular file, or one over ``limit`` bytes
    """
    if not path.is_file():  # follows symlinks: a link to /dev/zero or to a FIFO is not a regular file
        raise UntrustedFileError(f"{what} {str(path)!r} is missing or not a regular file")
    try:
        with open(path, "rb") as file:
            raw = file.read(limit + 1)
    except OSError as error:
        raise UntrustedFileError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None
    if len(raw) > limit:
        raise UntrustedFileError(f"{what} {str(path)!r} is larger than {_size(limit)}: refusing to read it")
    return raw


def parse_json(raw: bytes | str, what: str) -> Any:
    """``json.loads`` whose every failure is one line, including the ``RecursionError`` of deeply nested input."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise UntrustedFileError(f"{what} is nested too deeply to be parsed") from None
    except ValueError as error:  # JSONDecodeError, bad UTF-8, integers over Python's digit limit
        raise UntrustedFileError(f"{what} is not valid JSON ({first_line(error)})") from None


def read_json(path: Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file of at most ``limit`` bytes (see :func:`read_bytes` and :func:`parse_json`)."""
    return parse_json(read_bytes(path, limit, what), f"{what} {str(path)!r}")


def check_zip_members(
    archive: zipfile.ZipFile,
    what: str,
    max_member_bytes: int,
    max_total_bytes: int,
    max_members: int = MAX_ZIP_MEMBERS,
) -> dict[str, zipfile.ZipInfo]:
    """Check a zip's directory before anything in it is decompressed, and index it by name.

    Nothing is ever extracted to disk, but a member name that would climb out of a folder (absolute, ``..``) or a
    repeated one is never written by SB3, torch or NumPy: such a zip was crafted, and is refused. Sizes are the ones
    the directory declares: ``zipfile`` never returns more than the declared size of a member (and fails its CRC if
    the data do not match), so capping the declared sizes caps what reading can allocate.

    :param archive: the open zip
    :param what: the zip's role, for error messages
    :param max_member_bytes: largest uncompressed member
    :param max_total_bytes: largest sum of the uncompressed members
    :param max_members: most members
    :return: the members by name
    :raises UntrustedFileError: for a name, size, count or compression ratio out of bounds
    """
    infos = archive.infolist()
    if len(infos) > max_members:
        raise UntrustedFileError(f"{what} has {len(infos)} entries (at most {max_members} are read)")
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\0" in name:
            raise UntrustedFileError(f"{what} has an entry with an unsafe path {name!r}: refusing it")
        if name in members:
            raise UntrustedFileError(f"{what} has two entries named {name!r}: refusing it")
        if info.file_size > max_member_bytes:
            raise UntrustedFileError(
                f"{what}: entry {name!r} is {_size(info.file_size)} uncompressed (at most {_size(max_member_bytes)})"
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise UntrustedFileError(
                f"{what}: entry {name!r} compresses {info.file_size // max(info.compress_size, 1)}:1 "
                "(a zip bomb?): refusing it"
            )
        total += info.file_size
        members[name] = info
    if total > max_total_bytes:
        raise UntrustedFileError(f"{what} is {_size(total)} uncompressed (at most {_size(max_total_bytes)})")
    return members


def read_zip_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    """Read one member, never more than ``limit`` bytes (whatever its header claims).

    :raises UntrustedFileError: if the member declares or yields more than ``limit`` bytes
    """
    if info.file_size > limit:
        raise UntrustedFileError(f"entry {info.filename!r} is {_size(info.file_size)} (at most {_size(limit)})")
    with archive.open(info) as member:
        raw = member.read(limit + 1)
    if len(raw) > limit:
        raise UntrustedFileError(f"entry {info.filename!r} is larger than {_size(limit)}")
    return raw


def load_state_dict_bytes(
    raw: bytes, what: str, map_location: torch.device | str = "cpu", limit: int = MAX_WEIGHTS_BYTES
) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``'d ``state_dict`` from bytes: tensors only, sizes bounded, every failure one line.

    The file must be in torch's zip format (``torch.save``'s only format since torch 1.6): its directory is checked
    like any zip's, so a record cannot declare more than ``limit`` bytes. The content is read with
    ``torch.load(weights_only=True)``, torch's restricted unpickler, which rebuilds tensors and plain containers and
    refuses any other global (so a pickled ``os.system`` is never called).

    :param raw: the file's bytes
    :param what: the file's role, for error messages
    :param map_location: device of the tensors
    :param limit: largest uncompressed content
    :raises UntrustedFileError: for anything but a dict of named tensors
    """
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            check_zip_members(archive, what, limit, limit)
    except UntrustedFileError:
        raise
    except ZIP_ERRORS:
        raise UntrustedFileError(f"{what} is not a torch weights file (torch.save's zip format)") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as error:  # hostile bytes: whatever torch's loader raises, the file is bad
        raise UntrustedFileError(f"cannot load {what}: {first_line(error)}") from None
    if not isinstance(state, dict) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise UntrustedFileError(f"{what} is not a state dict of named tensors")
    return state


def check_npz(path: Path, what: str, max_total_bytes: int) -> None:
    """Check an ``.npz`` file before ``np.load`` reads it: no pickled arrays, no array larger than its data.

    ``np.load`` allocates the array an ``.npy`` header declares before reading its data, so a small file can ask
    for terabytes; and an object array is a pickle (refused by ``allow_pickle=False`` too, but with an error that
    does not say which entry). Every entry's header is read (a few hundred bytes) and checked against its size.

    :raises UntrustedFileError: for a file that is not such an ``.npz`` or one of the problems above
    """
    if not path.is_file():
        raise UntrustedFileError(f"{what} {str(path)!r} is missing or not a regular file")
    try:
        with zipfile.ZipFile(path) as archive:
            members = check_zip_members(archive, what, max_total_bytes, max_total_bytes)
            for name, info in members.items():
                with archive.open(info) as member:
                    shape, dtype = _npy_header(member)
                if dtype.hasobject:
                    raise UntrustedFileError(f"{what}: array {name!r} holds Python objects (a pickle): refusing it")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise UntrustedFileError(
                        f"{what}: array {name!r} declares shape {shape} but its entry is only {_size(info.file_size)}"
                    )
    except UntrustedFileError:
        raise
    except ZIP_ERRORS as error:
        raise UntrustedFileError(f"{what} {str(path)!r} is not an .npz file ({type(error).__name__})") from None


def _npy_header(file: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(file)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(file)  # bounded: NumPy refuses headers over max_header_size (10 kB)
    return tuple(int(n) for n in shape), dtype


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (libraries' messages about hostile input can span many)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} bytes"
    if n_bytes < 1 << 20:
        return f"{n_bytes / 1024:.3g} KiB"
    if n_bytes < 1 << 30:
        return f"{n_bytes / (1 << 20):.3g} MiB"
    return f"{n_bytes / (1 << 30):.3g} GiB"
