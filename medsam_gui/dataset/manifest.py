"""The dataset folder: a small JSON manifest (the cases and what the user decided about them)
and, beside it, one workspace per case and the models learnt between cases.

Layout of ``DATASET/``::

    medsam-dataset.json   the manifest (format ``medsam-gui-dataset/1``), written atomically
    cases/<case id>/      the case's workspace (``annotation.store.Workspace`` on that folder)
    models/v<N>.pth       models adopted by ``adapt`` (with their .json metadata)

The manifest stores only what cannot be read from the workspaces: each case's image (path,
DICOM series), whether it is excluded, the user's state for it ("to review" or "done", who and
when), the time spent on it, label names given by the source, and the model history. Counts
of reviewed slices are read from the workspaces (``status``). Every change re-reads the
manifest, applies itself and writes it back whole (``Dataset.update``), so the window and a
command line run on the same dataset do not undo each other's changes to other cases.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Union

from medsam_gui.annotation.labels import now_iso
from medsam_gui.errors import MedsamError
from medsam_gui.io.atomic import atomic_write_bytes

FORMAT = "medsam-gui-dataset/1"
MANIFEST_FILE = "medsam-dataset.json"
CASES_DIR = "cases"
MODELS_DIR = "models"
STATES = ("", "to review", "done")  # what the user set; "" = follows the work (new/in progress)
PathLike = Union[str, os.PathLike]


@dataclass
class Case:
    """One scan of the dataset."""

    id: str  # unique, safe as a file name (nnU-Net case identifier on export)
    image: str  # absolute path: NIfTI file, or the DICOM folder holding the series
    kind: str = "nifti"  # "nifti" | "dicom"
    series_uid: Optional[str] = None
    description: str = ""
    source: str = ""  # which SOURCE of ``create`` found it (or "add")
    labels_path: Optional[str] = None  # a segmentation the source provides (not yet imported)
    excluded: bool = False
    state: str = ""  # one of STATES
    done_by: str = ""
    done_at: str = ""
    seconds: float = 0.0  # time spent with the case open in the window
    added: str = field(default_factory=now_iso)

    @classmethod
    def from_json(cls, d: dict) -> "Case":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        case = cls(**known)
        if case.state not in STATES:
            raise ValueError(f"unknown case state {case.state!r}")
        return case


def safe_id(text: str) -> str:
    """A case identifier from a name: letters, digits, '.', '-' and '_' only."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    return out or "case"


def user_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): still say something
        return os.environ.get("USER", "") or "unknown"


class Dataset:
    """A dataset folder. Open with ``Dataset.open``; make with ``Dataset.create``
    (``medsam_gui.dataset.sources`` finds the cases)."""

    def __init__(self, folder: PathLike, meta: dict):
        self.folder = Path(folder)
        self.meta = meta
        self.cases: List[Case] = [Case.from_json(c) for c in meta.get("cases", [])]

    # ---- files ---------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST_FILE

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.folder.name)

    def case_dir(self, case: Union[Case, str]) -> Path:
        """The case's workspace folder (``annotation.store.Workspace`` takes it)."""
        cid = case.id if isinstance(case, Case) else case
        return self.folder / CASES_DIR / cid

    def workspace(self, case: Union[Case, str], owner: Optional[str] = None):
        from medsam_gui.annotation import Workspace

        return Workspace(self.case_dir(case)) if owner is None else \
            Workspace(self.case_dir(case), owner)

    @property
    def models_dir(self) -> Path:
        return self.folder / MODELS_DIR

    # ---- reading and writing ---------------------------------------------------------------
    @classmethod
    def open(cls, folder: PathLike) -> "Dataset":
        path = Path(folder) / MANIFEST_FILE
        if Path(folder).is_file():
            raise MedsamError("this is a file; give the dataset folder (the one holding "
                              f"{MANIFEST_FILE})", folder)
        if not path.is_file():
            raise MedsamError(f"not a dataset folder (no {MANIFEST_FILE}); make one with "
                              "medsam-dataset create", folder)
        return cls(folder, read_manifest(path))

    @classmethod
    def create(cls, folder: PathLike, name: Optional[str] = None) -> "Dataset":
        """An empty dataset in ``folder`` (made if missing; refused if it holds one already)."""
        folder = Path(folder)
        if (folder / MANIFEST_FILE).exists():
            raise MedsamError("a dataset exists here already; add cases with medsam-dataset "
                              "add", folder)
        if folder.exists() and not folder.is_dir():
            raise MedsamError("this is a file, not a folder", folder)
        try:
            (folder / CASES_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MedsamError(f"cannot create the dataset folder ({exc.strerror or exc})",
                              folder) from None
        meta = {"format": FORMAT, "name": name or folder.name, "created": now_iso(),
                "cases": [], "model": {"current": None, "history": []}}
        ds = cls(folder, meta)
        ds.save()
        return ds

    def to_json(self) -> dict:
        meta = dict(self.meta)
        meta["format"] = FORMAT
        meta["cases"] = [asdict(c) for c in self.cases]
        meta.setdefault("model", {"current": None, "history": []})
        return meta

    def save(self) -> None:
        data = json.dumps(self.to_json(), indent=1).encode("utf-8")
        try:
            atomic_write_bytes(self.manifest_path, data)
        except OSError as exc:
            raise MedsamError(f"cannot write the dataset manifest ({exc.strerror or exc})",
                              self.manifest_path) from None

    def reload(self) -> None:
        fresh = Dataset.open(self.folder)
        self.meta, self.cases = fresh.meta, fresh.cases

    def update(self, change: Callable[["Dataset"], None]) -> None:
        """Re-read the manifest, apply ``change`` to it, write it back (see the module doc)."""
        if self.manifest_path.exists():
            self.reload()
        change(self)
        self.save()

    # ---- cases ---------------------------------------------------------------------------
    def case(self, cid: str) -> Case:
        for c in self.cases:
            if c.id == cid:
                return c
        raise MedsamError(f"no case {cid!r} in this dataset", self.folder)

    def active(self) -> List[Case]:
        return [c for c in self.cases if not c.excluded]

    def find(self, image: PathLike, series_uid: Optional[str] = None) -> Optional[Case]:
        img = os.path.abspath(os.fspath(image))
        for c in self.cases:
            if c.image == img and (series_uid is None or c.series_uid == series_uid):
                return c
        return None

    def new_id(self, wanted: str) -> str:
        taken = {c.id for c in self.cases}
        base = safe_id(wanted)
        cid, n = base, 2
        while cid in taken:
            cid, n = f"{base}_{n}", n + 1
        return cid

    def add_cases(self, cases: Iterable[Case]) -> List[Case]:
        """Add cases not in the dataset yet (same image and series: skipped); returns the
        added ones with their final ids."""
        added: List[Case] = []

        def change(ds: "Dataset") -> None:
            for c in cases:
                if ds.find(c.image, c.series_uid) is not None:
                    continue
                c.id = ds.new_id(c.id)
                ds.cases.append(c)
                added.append(c)

        self.update(change)
        return added

    def set_state(self, cid: str, state: str, who: Optional[str] = None) -> Case:
        """Mark a case "done" (who and when are recorded), "to review", or back to "" (the
        work decides: new / in progress)."""
        if state not in STATES:
            raise MedsamError(f"unknown state {state!r}; use one of: done, to review, or none")

        def change(ds: "Dataset") -> None:
            c = ds.case(cid)
            c.state = state
            c.done_by = (who or user_name()) if state == "done" else ""
            c.done_at = now_iso() if state == "done" else ""

        self.update(change)
        return self.case(cid)

    def set_excluded(self, cid: str, excluded: bool = True) -> None:
        self.update(lambda ds: setattr(ds.case(cid), "excluded", bool(excluded)))

    def add_time(self, cid: str, seconds: float) -> None:
        """Add time the user spent on a case (the window calls this when it leaves a case)."""
        if seconds <= 0:
            return

        def change(ds: "Dataset") -> None:
            c = ds.case(cid)
            c.seconds = round(c.seconds + float(seconds), 1)

        self.update(change)

    def neighbour(self, cid: Optional[str], step: int = 1) -> Optional[Case]:
        """The next (step +1) or previous (-1) case that is not excluded, or None at the end;
        with no ``cid`` the first case not done (where the user left off)."""
        cases = self.active()
        if not cases:
            return None
        if cid is None:
            from medsam_gui.dataset.status import case_status

            for c in cases:
                if case_status(self, c).status != "done":
                    return c
            return cases[0]
        ids = [c.id for c in cases]
        if cid not in ids:
            return cases[0]
        k = ids.index(cid) + step
        return cases[k] if 0 <= k < len(cases) else None

    # ---- models --------------------------------------------------------------------------
    @property
    def current_model(self) -> Optional[str]:
        """The checkpoint the dataset uses (adopted by ``adapt``), or None for the base."""
        cur = (self.meta.get("model") or {}).get("current")
        return str(self.folder / cur) if cur else None

    def model_modalities(self) -> List[str]:
        """The modalities the current model learned from ([] for the base model, and for a
        model adopted before they were recorded: then it is used on every case)."""
        model = self.meta.get("model") or {}
        cur = model.get("current")
        for entry in reversed(model.get("history") or []):
            if cur and entry.get("path") == cur:
                return [str(m) for m in entry.get("modalities") or []]
        return []

    def model_for(self, modality: Optional[str]) -> Optional[str]:
        """The checkpoint for a case of ``modality``: the current model when it learned from
        that modality (or ``modality`` is unknown), else None, the base model. Learning from CT
        cases says nothing about MR: measured, a model adopted on one CT case lost 0.077 Dice on
        the next case, an MR (benchmarks/bench_dataset.py)."""
        learned = self.model_modalities()
        if modality and learned and str(modality) not in learned:
            return None
        return self.current_model


def read_manifest(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MedsamError(f"cannot read the dataset manifest ({type(exc).__name__}: "
                          f"{str(exc)[:200]})", path) from None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(
            "medsam-gui-dataset/"):
        raise MedsamError("not a medsam-gui dataset manifest", path)
    fmt = str(meta["format"])
    try:
        version = int(fmt.rsplit("/", 1)[1])
    except ValueError:
        raise MedsamError(f"unknown manifest format {fmt!r}", path) from None
    if version > int(FORMAT.rsplit("/", 1)[1]):
        raise MedsamError(f"this dataset was written by a newer medsam-gui ({fmt}); update "
                          "medsam-gui to open it", path)
    try:
        for c in meta.get("cases", []):
            Case.from_json(c)
    except (TypeError, ValueError) as exc:
        raise MedsamError(f"damaged dataset manifest ({exc})", path) from None
    return meta
