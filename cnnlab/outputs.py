"""Checks on the paths cnnlab writes, made before any work: a run that would fail to save its
results after an hour of training fails in the first second instead.

The rules: the nearest existing ancestor must be a writable folder (not a file, not read-only),
a file path must not be a folder and must carry an extension the writer produces, and a folder
path must not be a file. Writability is judged from the permission bits as well as `os.access`,
so that a read-only folder counts as read-only even for root, who could write anyway.
"""

from __future__ import annotations

import os
from pathlib import Path

from cnnlab.errors import OutputPathError


def writable(folder: str | os.PathLike) -> bool:
    """Can files be created in `folder` (or, when it does not exist yet, its nearest ancestor)?"""
    probe = _nearest_existing(Path(folder))
    return probe.is_dir() and os.access(probe, os.W_OK) and bool(probe.stat().st_mode & 0o222)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_parent(path: Path) -> None:
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise OutputPathError(path, f"cannot be created: {parent} is a file, not a folder")
    if not writable(parent):
        raise OutputPathError(path, f"cannot be written: {parent} is read-only")


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...]) -> Path:
    """`path` as a file about to be written in one of `suffixes` (".png", ...), or
    OutputPathError. An existing file is replaced, so it must be writable itself."""
    path = Path(path)
    wanted = " or ".join(suffixes)
    if path.is_dir():
        raise OutputPathError(path, f"is a folder; give a file name such as {path / 'plot'}"
                              f"{suffixes[0]}")
    if path.suffix.lower() not in suffixes:
        what = f"extension {path.suffix!r}" if path.suffix else "no extension"
        raise OutputPathError(path, f"has {what}; this file is written as {wanted}")
    _check_parent(path)
    if path.exists() and not (os.access(path, os.W_OK) and path.stat().st_mode & 0o222):
        raise OutputPathError(path, "exists and is read-only")
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """`path` as a folder about to be created or filled, or OutputPathError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(path, "is an existing file, not a folder")
    if path.is_dir():
        if not writable(path):
            raise OutputPathError(path, "is a read-only folder")
        return path
    _check_parent(path)
    return path


def write_failure(path: str | os.PathLike, err: OSError) -> OutputPathError:
    """The user-facing error for a failed write (disk full, quota, read-only file system)."""
    reason = os.strerror(err.errno) if err.errno else str(err)
    return OutputPathError(path, f"could not be written ({reason}); any previous version of "
                           "the file is left as it was. Free some space or choose another "
                           "location, then try again")
