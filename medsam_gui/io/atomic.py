"""Atomic file writes: write beside the target, then ``os.replace`` it into place.

The temporary name is ``<name>.tmp-<pid>`` in the target's folder (same file system, so the
rename is atomic), and the folder is fsynced after the rename. On any failure the temporary file
is removed and the target is untouched; temporary files of a process that was killed before it
could remove them are removed the next time the folder is written.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
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


_TEMP_PID = re.compile(r"\.tmp-(\d+)")


def _pid_gone(pid: int) -> bool:
    if pid == os.getpid():
        return False
    if sys.platform == "win32":  # pragma: no cover - cannot tell cheaply: keep the file
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def clean_stale_temps(folder: PathLike, prefix: str = "") -> int:
    """Remove temporary files (``*.tmp-<pid>*``) in ``folder`` left by processes that are
    gone (kill -9, power loss); returns how many. ``prefix`` limits it to one target's temps,
    for folders that are not ours (an export's destination)."""
    removed = 0
    try:
        names = os.listdir(folder)
    except OSError:
        return 0
    for name in names:
        m = _TEMP_PID.search(name)
        if not m or not name.startswith(prefix) or not _pid_gone(int(m.group(1))):
            continue
        p = Path(folder) / name
        try:
            if p.is_dir() and not p.is_symlink():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def fsync_dir(folder: PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be synced."""
    if sys.platform == "win32":  # pragma: no cover
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temp_path_for(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path``, on failure it is removed."""
    target = Path(path)
    tmp = temp_path_for(target)
    clean_stale_temps(target.parent, prefix=f"{target.name}.tmp-")
    try:
        yield tmp
        os.replace(tmp, target)
        fsync_dir(target.parent)
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
