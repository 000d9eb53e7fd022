"""Consistent generations of one scan's saved work, and the backups kept of them.

Every save is one *generation*: a label map and the annotation JSON that describes it, the JSON
naming the label map by its sha256. A generation is first written complete into its own folder,
``history/gen-<N>/`` (a temp folder renamed into place, so it exists whole or not at all); only
then are the top-level ``labels.nii.gz`` and ``annotation.json`` replaced (copies, not hard
links: a tool that writes the current file in place cannot reach the backup). A crash between
the two top-level renames leaves a pair whose digests disagree; the reader notices and takes the
newest complete generation instead.

Backups: the newest generation and older ones at least ``MIN_INTERVAL_S`` apart, at most
``KEEP`` in all, so they reach back further than the last few strokes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import List, Optional

from medsam_gui.io.atomic import fsync_dir

HISTORY_DIR = "history"
KEEP = 5
MIN_INTERVAL_S = 120.0
_GEN = re.compile(r"^gen-(\d{6,})$")


@dataclass
class Generation:
    """One complete saved generation in ``history/``."""

    number: int
    folder: Path

    @property
    def saved_at(self) -> Optional[datetime]:
        """When it was written (the folder's time), local time; None if it has gone."""
        try:
            return datetime.fromtimestamp(self.folder.stat().st_mtime)
        except OSError:
            return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_synced(src: Path, dst: Path) -> None:
    """A synced copy. Not a hard link: a tool that writes the current file in place (or
    truncates it) must not damage the backup with it."""
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as f:
        os.fsync(f.fileno())


def history_dir(volume_dir: Path) -> Path:
    return Path(volume_dir) / HISTORY_DIR


def list_generations(volume_dir: Path) -> List[Generation]:
    """Complete generations, newest first."""
    hist = history_dir(volume_dir)
    try:
        names = os.listdir(hist)
    except OSError:
        return []
    gens = []
    for name in names:
        m = _GEN.match(name)
        if m and (hist / name).is_dir():
            gens.append(Generation(int(m.group(1)), hist / name))
    return sorted(gens, key=lambda g: -g.number)


def next_number(volume_dir: Path, current: int = 0) -> int:
    gens = list_generations(volume_dir)
    return max([current] + [g.number for g in gens]) + 1


def write_generation(volume_dir: Path, number: int, labels_file: Path, json_bytes: bytes,
                     labels_name: str, json_name: str) -> Generation:
    """Write generation ``number`` whole into ``history/gen-<number>`` and return it."""
    from medsam_gui.io.atomic import write_synced

    hist = history_dir(volume_dir)
    hist.mkdir(parents=True, exist_ok=True)
    final = hist / f"gen-{number:06d}"
    tmp = hist / f".gen-{number:06d}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        copy_synced(labels_file, tmp / labels_name)
        write_synced(tmp / json_name, json_bytes)
        fsync_dir(tmp)
        os.rename(tmp, final)  # fails if another writer made the same number: never merged
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(hist)
    return Generation(number, final)


def prune(volume_dir: Path, keep: int = KEEP,
          min_interval_s: float = MIN_INTERVAL_S) -> List[Generation]:
    """Delete backups beyond the kept ones; returns the kept, newest first."""
    kept: List[Generation] = []
    last_time: Optional[datetime] = None
    for gen in list_generations(volume_dir):
        t = gen.saved_at
        if not kept:
            keep_it = True
        elif len(kept) >= keep:
            keep_it = False
        else:
            keep_it = (t is None or last_time is None
                       or (last_time - t).total_seconds() >= min_interval_s)
        if keep_it:
            kept.append(gen)
            last_time = t if t is not None else last_time
        else:
            shutil.rmtree(gen.folder, ignore_errors=True)
    return kept
