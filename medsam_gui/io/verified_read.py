"""Reading a file's voxel bytes with its faults caught: a gzip stream is decompressed to its
end so every member's CRC and length are verified (a flipped bit is refused, never shown), a
buffer is sized from a header's claim only once the file is known to hold that much, and the
caller's progress and cancel (``limits.tick``) are honoured chunk by chunk."""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import MedsamError
from .limits import size_text, tick

CHUNK = 1 << 20
PLAIN_CHUNK = 8 << 20  # an uncompressed file is read this much at a time (progress, cancel)


def _short_stream(path: Path, have: int, need: int) -> MedsamError:
    return MedsamError(f"the file is truncated: the header promises {need} bytes of header and "
                       f"voxels, the decompressed file holds {have} ({size_text(need - have)} "
                       "missing)", path)


def inflate_error(path: Path, exc: zlib.error) -> MedsamError:
    text = str(exc)
    what = ("CRC check failed" if "incorrect data check" in text else
            "length check failed" if "incorrect length check" in text else
            f"invalid compressed data: {text.split(': ', 1)[-1]}")
    return MedsamError(f"the compressed file is damaged ({what}); its voxels cannot be trusted "
                       "and are not shown", path)


def _stream_gzip(path: Path, need: int, out: Optional[np.ndarray], start: int,
                 notes: List[str]) -> int:
    """Decompress the whole ``.nii.gz``, every gzip member to its end, so zlib verifies each
    member's CRC and length; copy bytes ``start..start+len(out)`` into ``out``; return the
    decompressed length. Zero padding after the last member is allowed (gzip allows it)."""
    pos = 0
    view = memoryview(out) if out is not None else None
    end = start + len(out) if out is not None else 0

    def keep(piece: bytes) -> None:
        nonlocal pos
        a, b = max(pos, start), min(pos + len(piece), end)
        if view is not None and a < b:
            view[a - start: b - start] = memoryview(piece)[a - pos: b - pos]
        pos += len(piece)
        tick(min(pos, need), need, path)  # the caller's progress; stops here on its cancel

    member: Optional["zlib._Decompress"] = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    try:
        with open(path, "rb") as f:
            while True:
                if not pending:
                    pending = f.read(CHUNK)
                    if not pending:
                        break
                if member is None:  # between members: zero padding, another member or junk
                    pending = pending.lstrip(b"\0")
                    if not pending:
                        continue
                    if pending[:1] != b"\x1f":
                        notes.append(f"bytes after the end of the compressed data were "
                                     f"ignored (the {pos} bytes before them passed gzip's "
                                     "CRC check)")
                        return pos
                    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                keep(member.decompress(pending, CHUNK))
                pending = member.unconsumed_tail
                if member.eof:
                    pending, member = member.unused_data, None
            if member is not None:
                keep(member.flush())
    except zlib.error as exc:
        raise inflate_error(path, exc) from None
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if member is not None and not member.eof:
        raise MedsamError(f"the compressed file is truncated: it ends before its end-of-stream "
                          f"marker, after {pos} decompressed bytes of the {need} the header "
                          "promises", path)
    return pos


def read_gzip_verified(path: Path, need: int, start: int, nbytes: int, notes: List[str],
               slack: int = 0) -> np.ndarray:
    """``nbytes`` decompressed bytes from ``start``, after the whole stream is verified.

    The buffer is sized from the header only when gzip's trailer (the length mod 2**32)
    agrees with it; otherwise the stream is first decompressed without keeping it, so a header
    that lies costs no memory, and a damaged or short stream is refused before any buffer."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if not 0 <= (isize - need) % (1 << 32) <= slack:  # slack: a format's footer (MGH)
        length = _stream_gzip(path, need, None, 0, notes)
        if length < need:
            raise _short_stream(path, length, need)
    out = np.empty(nbytes, np.uint8)
    length = _stream_gzip(path, need, out, start, notes)
    if length < need:
        raise _short_stream(path, length, need)
    return out


def read_plain(path: Path, need: int, start: int, nbytes: int) -> np.ndarray:
    out = np.empty(nbytes, np.uint8)
    view = memoryview(out)
    got = 0
    tick(0, nbytes, path)
    try:
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            while got < nbytes:
                n = f.readinto(view[got: got + PLAIN_CHUNK])
                if not n:
                    break
                got += n
                tick(got, nbytes, path)  # the caller's progress; stops here on its cancel
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if got < nbytes:  # shrank since it was checked
        raise MedsamError(f"the file is truncated: the header promises {need} bytes, the file "
                          f"ends after {start + got}", path)
    return out
