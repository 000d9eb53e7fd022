"""Saved work under faults (core): damaged files, newer formats, torn saves, backups, the lock,
kill -9 during saves, stale temp files. Every test counts the saved voxels before and after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.annotation import LabelMap, SliceRecord, Workspace
from medsam_gui.annotation import lock
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume

from conftest import fill_up

pytestmark = pytest.mark.needs_data
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def flair(tmp_path_factory):
    from conftest import PAT1

    d = tmp_path_factory.mktemp("scan")
    p = d / "flair.nii.gz"
    shutil.copy(PAT1 / "Flair_subtrMeanDivStd.nii.gz", p)
    gt = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0
    return load_volume(p), gt


def drawn(vol, gt, slices=(70,)) -> LabelMap:
    """A label map with the expert tumour on ``slices``, reviewed."""
    lm = LabelMap(vol.shape)
    lm.table.add("tumour")
    geom = vol.geometry("axial")
    for i in slices:
        rec = SliceRecord("axial", i, 1, status="model", boxes=[[10, 20, 100, 120]])
        lm.paint(geom, i, geom.take(gt, i), 1, record=rec)
        lm.mark_accepted("axial", i, 1)
    return lm


def brush(vol, lm: LabelMap, index: int = 20, n: int = 10) -> None:
    geom = vol.geometry("axial")
    m = np.zeros(geom.slice_shape, bool)
    m[5:5 + n, 5:15] = True
    lm.paint(geom, index, m, 1)


def no_temps(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".tmp-" in p.name]


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.name != lock.LOCK_FILE}


def test_every_save_is_a_whole_generation_and_backups_restore(flair, tmp_path):
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    ws.backup_interval_s = 0
    lm = drawn(vol, gt)
    counts = []
    for k in range(7):
        brush(vol, lm, index=20 + k)
        ws.save(vol, lm)
        counts.append(int((lm.array > 0).sum()))
    gens = ws.generations(vol)
    assert [g.number for g in gens] == [7, 6, 5, 4, 3]  # the last five kept
    for g in gens:  # each backup is whole and is the state of its save
        assert int((ws.read_generation(g).array > 0).sum()) == counts[g.number - 1]
    assert no_temps(ws.volume_dir(vol))


def test_backups_reach_back_in_time(flair, tmp_path):
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    ws.backup_interval_s = 3600  # every save is within the hour: only the newest two stay
    lm = drawn(vol, gt)
    for k in range(4):
        brush(vol, lm, index=30 + k)
        ws.save(vol, lm)
    assert [g.number for g in ws.generations(vol)] == [4]


@pytest.mark.parametrize("damage", ["truncate_json", "labels_is_five", "half_labels",
                                    "bad_gzip_crc", "slices_string", "deep_json", "null_source"])
def test_damaged_current_files_are_kept_and_the_last_whole_save_restored(flair, tmp_path,
                                                                       damage):
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    lm = drawn(vol, gt, slices=(60, 70))
    folder = ws.save(vol, lm)
    saved_voxels = int((lm.array > 0).sum())
    jpath, lpath = folder / "annotation.json", folder / "labels.nii.gz"
    if damage == "truncate_json":
        with open(jpath, "r+b") as f:  # in place, as a crashed editor or a full disk would
            f.truncate(os.path.getsize(jpath) // 2)
    elif damage == "labels_is_five":
        meta = json.loads(jpath.read_text())
        meta["labels"] = 5
        jpath.write_text(json.dumps(meta))
    elif damage == "half_labels":
        with open(lpath, "r+b") as f:
            f.truncate(os.path.getsize(lpath) // 2)
    elif damage == "bad_gzip_crc":
        data = bytearray(lpath.read_bytes())
        data[-6] ^= 0xFF  # inside the gzip trailer's CRC32
        with open(lpath, "r+b") as f:
            f.write(data)
    elif damage == "slices_string":
        meta = json.loads(jpath.read_text())
        meta["slices"] = "oops"
        jpath.write_text(json.dumps(meta))
    elif damage == "deep_json":
        jpath.write_text("[" * 100000 + "]" * 100000)
    elif damage == "null_source":
        meta = json.loads(jpath.read_text())
        meta["source"] = None
        jpath.write_text(json.dumps(meta))
    damaged_bytes = {p.name: p.read_bytes() for p in (jpath, lpath)}

    window = Workspace(tmp_path / "ws", owner="window-1")
    restored = window.open(vol)
    assert restored.read_only == ""
    assert int((restored.labelmap.array > 0).sum()) == saved_voxels
    assert restored.labelmap.records[("axial", 70, 1)].status == "accepted"
    assert restored.notes and "Restored the last whole save" in restored.notes[0]
    # the damaged files are kept, byte for byte, under names that say so
    assert restored.moved_aside
    for moved in restored.moved_aside:
        assert ".broken-" in moved.name
        original = "annotation.json" if moved.name.endswith(".json") else "labels.nii.gz"
        assert moved.read_bytes() == damaged_bytes[original]
    # the first stroke saves on top of what was restored, not on an empty map
    brush(vol, restored.labelmap)
    window.save(vol, restored.labelmap)
    window.close()
    again = Workspace(tmp_path / "ws").load(vol)
    assert int((again.array > 0).sum()) == saved_voxels + 100
    for moved in restored.moved_aside:
        assert moved.exists()


def test_a_damaged_file_without_backups_keeps_its_voxels(flair, tmp_path):
    """Work saved before backups existed: a broken JSON still leaves a label map to recover."""
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    lm = drawn(vol, gt)
    folder = ws.save(vol, lm)
    shutil.rmtree(folder / "history")
    (folder / "annotation.json").write_text('{"format": "medsam-gui-workspace/1", "sour')
    voxels = int((lm.array > 0).sum())
    window = Workspace(tmp_path / "ws", owner="window-1")
    restored = window.open(vol)
    assert restored.read_only == "" and restored.labelmap is not None
    assert int((restored.labelmap.array > 0).sum()) == voxels
    assert "Recovered the label map's voxels" in " ".join(restored.notes)
    assert [p.name.split(".broken-")[0] for p in restored.moved_aside] == ["annotation",
                                                                           "labels"]
    window.save(vol, restored.labelmap)
    assert int((window.load(vol).array > 0).sum()) == voxels
    window.close()


def test_work_of_a_newer_version_is_read_only_and_never_downgraded(flair, tmp_path):
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    folder = ws.save(vol, drawn(vol, gt))
    meta = json.loads((folder / "annotation.json").read_text())
    meta["format"] = "medsam-gui-workspace/2"
    (folder / "annotation.json").write_text(json.dumps(meta))
    before = snapshot(folder)
    window = Workspace(tmp_path / "ws", owner="window-1")
    restored = window.open(vol)
    assert restored.labelmap is None
    assert "newer medsam-gui" in restored.read_only and "workspace/2" in restored.read_only
    with pytest.raises(MedsamError, match="not saved"):
        window.save(vol, drawn(vol, gt, slices=(50,)))
    with pytest.raises(MedsamError, match="newer medsam-gui"):
        Workspace(tmp_path / "ws").load(vol)
    assert snapshot(folder) == before
    window.close()


def test_a_torn_save_is_read_as_the_newest_whole_generation(flair, tmp_path):
    """A crash between the two renames pairs the new label map with the old JSON."""
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    lm = drawn(vol, gt)
    folder = ws.save(vol, lm)
    old_json = (folder / "annotation.json").read_bytes()
    brush(vol, lm)
    ws.save(vol, lm)
    (folder / "annotation.json").write_bytes(old_json)  # the JSON rename never happened
    window = Workspace(tmp_path / "ws", owner="window-1")
    restored = window.open(vol)
    assert int((restored.labelmap.array > 0).sum()) == int((lm.array > 0).sum())
    assert restored.moved_aside == [] and restored.notes == []  # nothing was damaged
    window.close()


def test_one_writer_second_window_read_only_then_take_over(flair, tmp_path):
    vol, gt = flair
    Workspace(tmp_path / "ws").save(vol, drawn(vol, gt))
    first = Workspace(tmp_path / "ws", owner="window-1")
    second = Workspace(tmp_path / "ws", owner="window-2")
    assert first.open(vol).read_only == ""
    restored = second.open(vol)
    assert restored.labelmap is not None  # the work is shown
    assert "open in" in restored.read_only and str(os.getpid()) in restored.read_only
    lm = restored.labelmap
    brush(vol, lm)
    with pytest.raises(MedsamError, match="open in"):
        second.save(vol, lm)
    with pytest.raises(MedsamError, match="open in"):  # a script too
        Workspace(tmp_path / "ws").save(vol, lm)
    taken, message = second.take_over(vol)
    assert not taken and "still open" in message
    first.close()
    taken, message = second.take_over(vol)
    assert taken, message
    second.save(vol, lm)
    second.close()


HOLDER = textwrap.dedent("""
    import sys, time
    from medsam_gui.annotation import Workspace
    from medsam_gui.io import load_volume
    vol = load_volume(sys.argv[1])
    ws = Workspace(sys.argv[2], owner="window")
    r = ws.open(vol)
    print("held" if not r.read_only else "refused: " + r.read_only, flush=True)
    time.sleep(600)
""")


def test_a_lock_of_a_killed_window_is_not_left_behind(flair, tmp_path):
    vol, gt = flair
    Workspace(tmp_path / "ws").save(vol, drawn(vol, gt))
    child = subprocess.Popen([sys.executable, "-c", HOLDER, vol.source.path,
                              str(tmp_path / "ws")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        mine = Workspace(tmp_path / "ws", owner="window-1")
        r = mine.open(vol)
        assert f"process {child.pid}" in r.read_only
        mine.close()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    mine = Workspace(tmp_path / "ws", owner="window-1")
    assert mine.open(vol).read_only == ""  # the kernel released it with the process
    mine.close()


def test_stale_temp_files_of_killed_processes_are_removed(flair, tmp_path):
    vol, gt = flair
    ws = Workspace(tmp_path / "ws")
    folder = ws.save(vol, drawn(vol, gt))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = [folder / f".labels.tmp-{dead}.nii.gz", folder / f"annotation.json.tmp-{dead}",
             folder / "history" / f".gen-000009.tmp-{dead}"]
    stale[0].write_bytes(b"x")
    stale[1].write_bytes(b"x")
    stale[2].mkdir()
    ws.save(vol, drawn(vol, gt, slices=(71,)))
    assert not any(p.exists() for p in stale)


SAVER = textwrap.dedent("""
    import sys
    import numpy as np
    from medsam_gui.annotation import LabelMap, Workspace
    from medsam_gui.io import load_volume
    vol = load_volume(sys.argv[1])
    ws = Workspace(sys.argv[2])
    ws.backup_interval_s = 0
    lm = LabelMap(vol.shape)
    lm.table.add("tumour")
    geom = vol.geometry("axial")
    k = 0
    while True:
        m = np.zeros(geom.slice_shape, bool)
        m[10:20, 10:20] = True
        lm.paint(geom, k % vol.shape[2], m, 1)
        ws.save(vol, lm)
        k += 1
        print(k, int((lm.array > 0).sum()), flush=True)
""")


def test_kill_9_during_saves_never_loses_a_saved_stroke(flair, tmp_path):
    vol, _ = flair
    rng = np.random.default_rng(0)
    for trial in range(4):
        child = subprocess.Popen([sys.executable, "-c", SAVER, vol.source.path,
                                  str(tmp_path / "ws")], stdout=subprocess.PIPE, text=True)
        reported = 0
        deadline = time.monotonic() + 60
        # a few saves, then a kill at a random moment within the next save
        while reported < 2 + trial and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported = int(line.split()[1])
        time.sleep(float(rng.uniform(0, 0.4)))
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert reported, "the saver printed nothing"
        ws = Workspace(tmp_path / "ws", owner=f"reader-{trial}")
        r = ws.open(vol)
        assert r.read_only == "", r.read_only
        assert int((r.labelmap.array > 0).sum()) >= reported  # no reported-saved stroke lost
        ws.save(vol, r.labelmap)  # and it saves again
        ws.close()
        assert no_temps(ws.volume_dir(vol))
        shutil.rmtree(tmp_path / "ws")


def test_a_full_disk_keeps_the_last_save(flair, tiny_disk):
    vol, gt = flair
    ws = Workspace(tiny_disk / "ws")
    lm = drawn(vol, gt)
    folder = ws.save(vol, lm)
    voxels = int((lm.array > 0).sum())
    filler = fill_up(tiny_disk)
    brush(vol, lm)
    with pytest.raises(MedsamError, match="No space left|cannot"):
        ws.save(vol, lm)
    assert int((Workspace(tiny_disk / "ws").load(vol).array > 0).sum()) == voxels
    assert no_temps(folder)
    filler.unlink()
    ws.save(vol, lm)
    assert int((Workspace(tiny_disk / "ws").load(vol).array > 0).sum()) == voxels + 100


def test_work_on_read_only_media_opens_and_its_save_fails_cleanly(flair, tmp_path):
    """Work saved beside a scan on what is now read-only media: shown, and the first save
    raises (so the window saves it in the user folder) without touching what is there."""
    vol, gt = flair
    Workspace(tmp_path / "ws").save(vol, drawn(vol, gt))
    folder = Workspace(tmp_path / "ws").volume_dir(vol)
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(tmp_path / "ws"), str(tmp_path / "ws")],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here ({r.stderr.strip()})")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(tmp_path / "ws")],
                       capture_output=True)
        if os.access(folder, os.W_OK) and not _is_read_only(folder):
            pytest.skip("the bind mount did not become read-only here")
        before = snapshot(folder)
        ws = Workspace(tmp_path / "ws", owner="window-1")
        restored = ws.open(vol)
        assert restored.labelmap is not None and restored.read_only == ""
        brush(vol, restored.labelmap)
        with pytest.raises(MedsamError, match="[Rr]ead-only file system"):
            ws.save(vol, restored.labelmap)
        assert snapshot(folder) == before
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "ws")], capture_output=True)


def _is_read_only(folder: Path) -> bool:
    return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
