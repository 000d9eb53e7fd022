"""Atomic file writes: write beside the target, then ``os.replace`` it into place.

The temporary name is ``<name>.tmp-<pid>`` in the target's folder (same file system, so the
rename is atomic). On any failure the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Union

from ..errors import MedsamError

PathLike = Union[str, "os.PathLike[str]"]


def check_target(path: Path, name: str = "a file name") -> None:
    """Refuse, before any work, a target that is a folder or lies in no folder."""
    if path.is_dir():
        raise MedsamError(f"this is a folder; give {name}", path)
    if path.parent.exists() and not path.parent.is_dir():
        raise MedsamError(f"{path.parent} is a file, not a folder", path)
    if not path.parent.is_dir():
        raise MedsamError(f"the folder {path.parent} does not exist", path)


def temp_path_for(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    tmp = temp_path_for(target)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_synced(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, so a crash cannot leave a half-written file."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        write_synced(tmp, data)
    return Path(path)
