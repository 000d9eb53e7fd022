"""One writer per workspace folder: an advisory lock with the holder's name on it.

The lock is the operating system's (``fcntl.flock`` on POSIX, ``msvcrt.locking`` on Windows) on
a small file, ``.medsam-lock``, in the per-scan folder. The kernel releases it when the holder
exits in any way (kill -9 included), so a lock can never be left behind by a crash on a local
disk. The file also holds who took it (program, pid, host, user, time) so a second window can
say who has the work open.

Where the file system cannot lock (some network shares), the file's contents decide: a holder
on this host whose process is gone is stale and is taken over silently; a holder on another
host is respected until the user takes over explicitly (``take_over``).

Within one process, locks are shared by owner token: every ``Workspace`` of a script shares the
process's token, and each window passes its own, so two windows in one process are also kept
apart.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional, Tuple

from medsam_gui.errors import MedsamError

LOCK_FILE = ".medsam-lock"
PROCESS_OWNER = "process"


@dataclass
class LockOwner:
    """Who holds (or last held) a workspace lock, as written in the lock file."""

    program: str = ""
    pid: int = 0
    host: str = ""
    user: str = ""
    since: str = ""

    def describe(self) -> str:
        if not self.pid:
            return "another program"
        who = f"{self.program or 'a program'} (process {self.pid}"
        who += f" on {self.host}" if self.host and self.host != socket.gethostname() else ""
        who += f", user {self.user}" if self.user else ""
        return who + (f", since {_short_time(self.since)}" if self.since else "") + ")"

    @property
    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    @property
    def alive(self) -> bool:
        """False only when the holder certainly is gone (its pid does not exist here)."""
        return not self.on_this_host or pid_alive(self.pid)


def _short_time(iso: str) -> str:
    """"15:06" today, "2026-12-01 15:06" before; the text as it is if it is no time."""
    try:
        t = datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    now = datetime.now(timezone.utc).astimezone()
    return f"{t:%H:%M}" if t.date() == now.date() else f"{t:%Y-%m-%d %H:%M}"


class LockHeld(MedsamError):
    """The work is open for writing elsewhere."""

    def __init__(self, folder: Path, owner: LockOwner):
        self.owner = owner
        super().__init__(f"this scan's work is open in {owner.describe()}; it can be viewed "
                         "here but not changed", folder)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # pragma: no cover - no os.kill(pid, 0) there
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)
        if handle:
            ctypes.windll.kernel32.CloseHandle(handle)
            return True
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _me() -> LockOwner:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name is no reason to fail
        user = ""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not prog or prog.startswith("-") or prog.endswith(".py"):  # python -c / a script
        prog = "python " + prog if prog.endswith(".py") else "python"
    return LockOwner(prog, os.getpid(), socket.gethostname(), user,
                     datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds"))


def read_owner(folder: Path) -> LockOwner:
    try:
        d = json.loads((Path(folder) / LOCK_FILE).read_text(encoding="utf-8"))
        return LockOwner(str(d.get("program", "")), int(d.get("pid", 0)), str(d.get("host", "")),
                         str(d.get("user", "")), str(d.get("since", "")))
    except (OSError, ValueError, TypeError, AttributeError):
        return LockOwner()


def _os_lock(fd: int) -> Optional[bool]:
    """Try the OS lock: True taken, False held by someone, None not supported here."""
    try:
        if sys.platform == "win32":  # pragma: no cover
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except PermissionError:  # Windows reports a held lock so
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP: a share without locks
        return None


class _Held:
    def __init__(self, fd: int, token: str, os_locked: bool):
        self.fd, self.token, self.os_locked = fd, token, os_locked


_held: Dict[str, _Held] = {}
_guard = threading.Lock()


def _key(folder: Path) -> str:
    return os.path.normcase(os.path.abspath(os.fspath(folder)))


def _write_owner(fd: int) -> None:
    data = json.dumps(_me().__dict__).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)


def acquire(folder: Path, token: str = PROCESS_OWNER, force: bool = False) -> None:
    """Take the write lock of ``folder`` for ``token`` (or raise ``LockHeld``).

    ``force`` takes over a lock on a file system without OS locks whatever its file says (the
    user's explicit "take over"); an OS lock held by a live process can never be forced.
    """
    folder = Path(folder)
    key = _key(folder)
    with _guard:
        held = _held.get(key)
        if held is not None:
            if held.token == token:
                return
            raise LockHeld(folder, read_owner(folder))
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise MedsamError(f"cannot create the workspace lock ({exc.strerror or exc})",
                              folder) from None
        state = _os_lock(fd)
        if state is False:
            owner = read_owner(folder)
            os.close(fd)
            raise LockHeld(folder, owner)
        if state is None and not force:
            owner = read_owner(folder)
            if owner.pid and owner.pid != os.getpid() and owner.alive:
                os.close(fd)
                raise LockHeld(folder, owner)
        try:
            _write_owner(fd)
        except OSError as exc:
            os.close(fd)
            raise MedsamError(f"cannot write the workspace lock ({exc.strerror or exc})",
                              folder) from None
        _held[key] = _Held(fd, token, bool(state))


def holds(folder: Path, token: str = PROCESS_OWNER) -> bool:
    held = _held.get(_key(Path(folder)))
    return held is not None and held.token == token


def release(folder: Path, token: str = PROCESS_OWNER) -> None:
    """Give the lock back (the file stays; its contents no longer matter)."""
    key = _key(Path(folder))
    with _guard:
        held = _held.get(key)
        if held is None or held.token != token:
            return
        del _held[key]
        if not held.os_locked:  # nothing else says it is free: clear the holder
            try:
                os.ftruncate(held.fd, 0)
            except OSError:
                pass
        os.close(held.fd)  # closing releases the OS lock


def release_all(token: str) -> None:
    for key, held in list(_held.items()):
        if held.token == token:
            release(Path(key), token)


def take_over(folder: Path, token: str = PROCESS_OWNER) -> Tuple[bool, str]:
    """The user's explicit take-over. Returns (taken, what happened in plain words)."""
    try:
        acquire(folder, token)
        return True, "The other program has closed the work; you can edit it now."
    except LockHeld as exc:
        owner = exc.owner
        if owner.on_this_host and not owner.alive:
            acquire(folder, token, force=True)
            return True, "The lock was left by a program that has ended; it is yours now."
        if holds_os_lock_elsewhere(folder):
            return False, (f"The work is still open in {owner.describe()}. Close it there "
                           "first (its autosave would overwrite your changes).")
        acquire(folder, token, force=True)
        return True, f"Took over the lock from {owner.describe()}."


def holds_os_lock_elsewhere(folder: Path) -> bool:
    """Is the OS lock of ``folder`` held by another live process (True) or free/unsupported?"""
    try:
        fd = os.open(Path(folder) / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        state = _os_lock(fd)
        return state is False
    finally:
        os.close(fd)  # also releases the probe's lock, if it got one
