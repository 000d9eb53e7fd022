"""Which workspace subfolder holds a volume's saved work when the folder's name does not say:
read from the first bytes of each folder's annotation file (a workspace may hold hundreds of
scans), matched on the content hash, including work saved under the legacy hash scheme."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional, Tuple

from medsam_gui.annotation import generations as gens
from medsam_gui.annotation.saved_work import JSON_FILE
from medsam_gui.volume import HASH_SCHEME, Volume

_SAVED_HASH = re.compile(r'"content_hash":\s*"([0-9a-f]+)"')
_SAVED_SCHEME = re.compile(r'"content_hash_scheme":\s*(\d+)')
_SAVED_SHAPE = re.compile(r'"shape":\s*\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]')
HEAD_BYTES = 16384  # the "source" section comes first in annotation.json


def saved_source(folder: Path) -> Optional[Tuple[str, int, Tuple[int, ...]]]:
    """(content hash, hash scheme, shape) that a folder's newest annotation file names, read
    from its first bytes only (a workspace may hold hundreds of scans), or None."""
    candidates = [folder / JSON_FILE] + [g.folder / JSON_FILE
                                         for g in gens.list_generations(folder)]
    for path in candidates:
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEAD_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        found, shape = _SAVED_HASH.search(head), _SAVED_SHAPE.search(head)
        if found and shape:
            scheme = _SAVED_SCHEME.search(head)
            return (found.group(1), int(scheme.group(1)) if scheme else 1,
                    tuple(int(v) for v in shape.groups()))
    return None


def find_saved(workspace: Path, volume: Volume) -> Optional[Path]:
    """The subfolder of ``workspace`` whose saved work names this volume's content hash
    although the folder's name does not: work saved under the legacy hash (scheme 1, before
    the voxels were hashed in their memory order), found by that hash, and such folders after
    their first save under the current hash. The legacy hash is computed only when a scheme-1
    folder of the same shape exists. Nothing is renamed or rewritten here: the next save in
    the folder records the current hash beside the kept generations."""
    legacy: List[Tuple[Path, str]] = []
    try:
        subdirs = sorted(p for p in workspace.iterdir() if p.is_dir())
    except OSError:
        return None
    for d in subdirs:
        saved = saved_source(d)
        if saved is None:
            continue
        digest, scheme, shape = saved
        if digest == volume.content_hash:
            return d
        if scheme < HASH_SCHEME and shape == volume.shape:
            legacy.append((d, digest))
    for d, digest in legacy:
        if digest == volume.legacy_content_hash:
            return d
    return None
