"""Kill -9 soak: a process is killed at random moments while it saves a workspace, exports a
label map or trains, again and again; after every kill the work must be whole.

Checked after each kill:
- saves: the workspace opens (``Workspace.open``), holds at least every stroke the killed process
  had reported saved, every kept backup reads and is consistent (its JSON names its label map's
  sha256), and the next save leaves no temporary file;
- exports: the target is absent or a whole NIfTI equal to one of the states that were exported,
  and the next export leaves no temporary file;
- training: no half-written model beside the output name, no temporary file.

    python benchmarks/bench_kill_soak.py [--saves 100] [--exports 40] [--trainings 6]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
DATA = REPO.parent / "shared" / "data"
FLAIR = DATA / "brain_tumour_brats2015" / "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz"

SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from medsam_gui.annotation import Workspace
    from medsam_gui.io import load_volume
    vol = load_volume(sys.argv[1])
    ws = Workspace(sys.argv[2])
    ws.backup_interval_s = 0
    lm = ws.load(vol)
    if lm is None:
        from medsam_gui.annotation import LabelMap
        lm = LabelMap(vol.shape)
        lm.table.add("tumour")
    geom = vol.geometry("axial")
    k = int((lm.array > 0).sum()) // 100
    print("ready", int((lm.array > 0).sum()), flush=True)
    while True:
        m = np.zeros(geom.slice_shape, bool)
        m[10 + (k // 150) * 10:20 + (k // 150) * 10, 10:20] = True
        lm.paint(geom, k % vol.shape[2], m, 1)
        ws.save(vol, lm)
        k += 1
        print("saved", int((lm.array > 0).sum()), flush=True)
""")

EXPORTER = textwrap.dedent("""
    import sys
    import numpy as np
    from medsam_gui.annotation import LabelMap
    from medsam_gui.annotation.exporting import export_nifti
    from medsam_gui.io import load_volume
    vol = load_volume(sys.argv[1])
    lm = LabelMap(vol.shape)
    lm.table.add("tumour")
    geom = vol.geometry("axial")
    print("ready", 0, flush=True)
    k = 0
    while True:
        m = np.zeros(geom.slice_shape, bool)
        m[10:20, 10:20] = True
        lm.paint(geom, k % vol.shape[2], m, 1)
        export_nifti(lm, vol, sys.argv[2])
        k += 1
        print("saved", int((lm.array > 0).sum()), flush=True)
""")


def run_and_kill(script: str, args, rng, min_reports: int, timeout: float = 120.0) -> int:
    """Start ``script``, wait for ``min_reports`` "saved" lines, kill -9 at a random moment of
    the next one; returns the last reported count (-1 if none)."""
    child = subprocess.Popen([sys.executable, "-c", script, *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    last, seen = -1, 0
    deadline = time.monotonic() + timeout
    try:
        while seen < min_reports and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            word, value = line.split()
            if word == "saved":
                seen += 1
                last = int(value)
        time.sleep(float(rng.uniform(0.0, 0.35)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    # lines written before the kill still count as reported
    for line in child.stdout.read().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "saved":
            last = int(parts[1])
    return last


def temps(folder: Path) -> list:
    return [p for p in folder.rglob("*") if ".tmp-" in p.name]


def soak_saves(n: int, rng, work: Path) -> dict:
    from medsam_gui.annotation import Workspace
    from medsam_gui.annotation.generations import file_sha256
    from medsam_gui.annotation.saved_work import read_meta, read_work
    from medsam_gui.io import load_volume

    vol = load_volume(FLAIR)
    ws_dir = work / "ws"
    out = dict(kills=0, killed_mid_save=0, torn_pairs=0, lost=0, unreadable=0,
               inconsistent_backups=0, temps_left=0, restored_from_backup=0)
    for _ in range(n):
        reported = run_and_kill(SAVER, [FLAIR, ws_dir], rng, int(rng.integers(1, 4)))
        out["kills"] += 1
        # how often the kill hit a save half-way: its temporary files, or a torn current pair
        out["killed_mid_save"] += bool(temps(ws_dir))
        folder = next(iter(ws_dir.glob("*-*")), None)
        if folder is not None and read_work(folder).problems:
            out["torn_pairs"] += 1
        ws = Workspace(ws_dir, owner="soak")
        r = ws.open(vol)
        if r.labelmap is None or r.read_only:
            out["unreadable"] += 1
            ws.close()
            continue
        if r.notes:
            out["restored_from_backup"] += 1
        if int((r.labelmap.array > 0).sum()) < reported:
            out["lost"] += 1
        for g in ws.generations(vol):
            try:
                meta = read_meta(g.folder / "annotation.json")
                if meta.get("labels_sha256") != file_sha256(g.folder / "labels.nii.gz"):
                    out["inconsistent_backups"] += 1
            except Exception:  # noqa: BLE001 - counted
                out["inconsistent_backups"] += 1
        ws.save(vol, r.labelmap)
        out["temps_left"] += len(temps(ws_dir))
        ws.close()
    return out


def soak_exports(n: int, rng, work: Path) -> dict:
    import nibabel as nib

    target = work / "export" / "labels.nii.gz"
    target.parent.mkdir(parents=True, exist_ok=True)
    out = dict(kills=0, torn=0, temps_left=0)
    for _ in range(n):
        run_and_kill(EXPORTER, [FLAIR, target], rng, int(rng.integers(1, 3)))
        out["kills"] += 1
        if target.exists():
            try:
                arr = np.asarray(nib.load(str(target)).dataobj)
                if int((arr > 0).sum()) % 100 not in (0, 1):  # 1: the check export below
                    out["torn"] += 1
            except Exception:  # noqa: BLE001 - a torn file is what we count
                out["torn"] += 1
        # the next export by a live process removes what the killed one left
        from medsam_gui.annotation import LabelMap
        from medsam_gui.annotation.exporting import export_nifti
        from medsam_gui.io import load_volume

        vol = load_volume(FLAIR)
        lm = LabelMap(vol.shape)
        lm.table.add("x")
        lm.array[0, 0, 0] = 1
        export_nifti(lm, vol, target)
        out["temps_left"] += len(temps(target.parent))
    return out


def soak_training(n: int, rng, work: Path) -> dict:
    from medsam_gui.annotation import LabelMap, SliceRecord, Workspace
    from medsam_gui.io import load_volume
    import nibabel as nib

    vol = load_volume(FLAIR)
    truth = np.asarray(nib.load(str(FLAIR.parent / "OTMultiClass.nii.gz")).dataobj) > 0
    ws = Workspace(work / "train_ws")
    lm = LabelMap(vol.shape)
    lm.table.add("tumour")
    geom = vol.geometry("axial")
    for i in range(60, 100, 4):
        m = geom.take(truth, i)
        ys, xs = np.nonzero(m)
        rec = SliceRecord("axial", i, 1, status="model",
                          boxes=[[int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]])
        lm.paint(geom, i, m, 1, record=rec)
        lm.mark_accepted("axial", i, 1)
    ws.save(vol, lm)
    out_dir = work / "models"
    out_dir.mkdir()
    out = dict(kills=0, partial_models=0, temps_left=0)
    for k in range(n):
        model = out_dir / f"model{k}.pth"
        child = subprocess.Popen([sys.executable, "-m", "medsam_gui.training.train_cli",
                                  str(work / "train_ws"), "--out", str(model), "--epochs", "3",
                                  "--cache-dir", str(work / "cache")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(rng.uniform(3.0, 25.0)))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        out["kills"] += 1
        if model.exists():
            try:
                import torch

                torch.load(str(model), map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a half-written model is what we count
                out["partial_models"] += 1
        out["temps_left"] += len(temps(out_dir))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--saves", type=int, default=100)
    ap.add_argument("--exports", type=int, default=40)
    ap.add_argument("--trainings", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from bench_model_input import cpu_model

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="medsam-soak-"))
    print(f"CPU: {cpu_model()}")
    try:
        t0 = time.monotonic()
        print("saves   ", soak_saves(args.saves, rng, work), f"{time.monotonic() - t0:.0f} s")
        t0 = time.monotonic()
        print("exports ", soak_exports(args.exports, rng, work), f"{time.monotonic() - t0:.0f} s")
        if args.trainings:
            t0 = time.monotonic()
            print("training", soak_training(args.trainings, rng, work),
                  f"{time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
