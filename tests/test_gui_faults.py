"""Saved work under faults, through the window (offscreen) and the real ``medsam-gui`` process:
a second window, damaged and newer-format workspaces, restoring a backup, leaving with unsaved
work, SIGTERM within the autosave delay. Every test counts saved voxels before and after."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PyQt5.QtCore import QSettings

from conftest import PAT1, fill_up

pytestmark = pytest.mark.needs_data
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"


@pytest.fixture
def scan(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSAM_GUI_DATA_DIR", str(tmp_path / "userdata"))
    (tmp_path / "scans").mkdir()
    p = tmp_path / "scans" / "flair.nii.gz"
    shutil.copy(FLAIR, p)
    return p


@pytest.fixture
def make_window(qtbot, tmp_path):
    from medsam_gui.ui.main_window import MainWindow

    made = []

    def make():
        w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                       settings=QSettings(str(tmp_path / f"s{len(made)}.ini"),
                                          QSettings.IniFormat))
        w.confirm_close = False
        w.use_disk_cache = False
        qtbot.addWidget(w)
        made.append(w)
        return w

    yield make
    from PyQt5 import sip

    for w in made:
        if not sip.isdeleted(w):
            w.shutdown()


def open_and_wait(qtbot, w, path):
    with qtbot.waitSignal(w.volume_loaded, timeout=60000):
        w.open_path(str(path))


def stroke(w, index, size=10):
    mask = np.zeros(w.volume.geometry("axial").slice_shape, bool)
    mask[100:100 + size, 100:110] = True
    w.set_index(index)
    w._on_stroke(mask, erase=False)


def saved_voxels(tmp_path, w) -> int:
    from medsam_gui.annotation import Workspace

    return int((Workspace(tmp_path / "ws").load(w.volume).array > 0).sum())


def test_a_second_window_is_read_only_and_cannot_overwrite(qtbot, make_window, scan, tmp_path):
    first = make_window()
    open_and_wait(qtbot, first, scan)
    stroke(first, 70, size=12)
    assert first.flush_autosave()
    assert saved_voxels(tmp_path, first) == 120

    second = make_window()
    open_and_wait(qtbot, second, scan)
    assert int((second.labelmap.array > 0).sum()) == 120  # the work is shown
    assert "open in" in second.last_warning and str(os.getpid()) in second.last_warning
    assert second.workspace_label.text() == "read-only"
    stroke(second, 71)
    assert not second.flush_autosave()
    assert second.workspace_label.text() == "NOT SAVED: read-only"
    assert saved_voxels(tmp_path, first) == 120  # the first window's work is untouched
    # leaving the read-only window with unsaved changes keeps them (scripted: a rescue copy)
    second.close()
    rescued = list((tmp_path / "userdata" / "rescued").glob("*/*/labels.nii.gz"))
    assert len(rescued) == 1
    import nibabel as nib

    assert int((np.asarray(nib.load(str(rescued[0])).dataobj) > 0).sum()) == 220
    # once the first window has gone, a third takes over for real
    stroke(first, 72)
    first.close()
    third = make_window()
    open_and_wait(qtbot, third, scan)
    assert third.last_warning == "" and third.workspace_label.text().startswith("saved in")
    assert int((third.labelmap.array > 0).sum()) == 220


def test_take_over_after_the_holder_has_gone(qtbot, make_window, scan, tmp_path, monkeypatch):
    from PyQt5.QtWidgets import QMessageBox

    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: shown.append(a[2]))
    first, second = make_window(), make_window()
    open_and_wait(qtbot, first, scan)
    open_and_wait(qtbot, second, scan)
    assert second.take_over_action.isEnabled()
    second.take_over_work()
    assert "still open" in shown[-1] and second.workspace_label.text() == "read-only"
    first.shutdown()
    second.take_over_work()
    assert second.workspace_label.text().startswith("saved in")
    stroke(second, 60)
    assert second.flush_autosave() and saved_voxels(tmp_path, second) == 100


def test_a_damaged_workspace_is_restored_and_the_first_stroke_adds_to_it(qtbot, make_window,
                                                                        scan, tmp_path):
    first = make_window()
    open_and_wait(qtbot, first, scan)
    for k in range(12):  # 1,200 voxels, as in the report
        stroke(first, 60 + k)
    assert first.flush_autosave()
    folder = first.workspace.volume_dir(first.volume)
    first.close()
    jpath = folder / "annotation.json"
    with open(jpath, "r+b") as f:
        f.truncate(os.path.getsize(jpath) // 3)
    damaged = jpath.read_bytes()

    w = make_window()
    open_and_wait(qtbot, w, scan)
    assert int((w.labelmap.array > 0).sum()) == 1200
    assert "damaged" in w.last_warning and ".broken-" in w.last_warning
    stroke(w, 80)
    assert w.flush_autosave()
    assert saved_voxels(tmp_path, w) == 1300
    [kept] = folder.glob("annotation.broken-*.json")
    assert kept.read_bytes() == damaged


def test_newer_format_is_never_downgraded(qtbot, make_window, scan, tmp_path):
    first = make_window()
    open_and_wait(qtbot, first, scan)
    stroke(first, 70)
    assert first.flush_autosave()
    folder = first.workspace.volume_dir(first.volume)
    first.close()
    meta = json.loads((folder / "annotation.json").read_text())
    meta["format"] = "medsam-gui-workspace/2"
    (folder / "annotation.json").write_text(json.dumps(meta))
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()
              and p.name != ".medsam-lock"}
    w = make_window()
    open_and_wait(qtbot, w, scan)
    assert "newer medsam-gui" in w.last_warning
    stroke(w, 71)
    assert not w.flush_autosave()
    w.close()
    after = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()
             and p.name != ".medsam-lock"}
    assert after == before


def test_restore_an_earlier_version_is_one_undo_step(qtbot, make_window, scan, tmp_path):
    w = make_window()
    open_and_wait(qtbot, w, scan)
    w.workspace.backup_interval_s = 0
    for k in range(3):
        stroke(w, 50 + k)
        assert w.flush_autosave()
    assert [g.number for g in w.workspace.generations(w.volume)] == [3, 2, 1]
    assert w.restore_earlier_version(choice=2)  # the first save: one stroke
    assert int((w.labelmap.array > 0).sum()) == 100
    assert w.flush_autosave() and saved_voxels(tmp_path, w) == 100
    w.undo()
    assert int((w.labelmap.array > 0).sum()) == 300


DRIVER = textwrap.dedent("""
    import sys
    import numpy as np
    from PyQt5.QtCore import QTimer
    from PyQt5.QtWidgets import QApplication
    from medsam_gui.ui import app as gui_app
    from medsam_gui.ui.main_window import MainWindow

    qapp = QApplication(["medsam-gui"])
    w = MainWindow(background=False, load_model=False, workspace_dir=sys.argv[2])
    w.autosave_delay_ms = 600000  # the stroke stays pending: only the signal can save it
    gui_app.install_quit_handlers(qapp, w)
    w.volume_loaded.connect(lambda: QTimer.singleShot(0, draw))

    def draw():
        mask = np.zeros(w.volume.geometry("axial").slice_shape, bool)
        mask[100:110, 100:110] = True
        w.set_index(70)
        w._on_stroke(mask, erase=False)
        print("drawn", flush=True)

    w.open_path(sys.argv[1])
    sys.exit(qapp.exec_())
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_within_the_autosave_delay_saves_the_last_stroke(scan, tmp_path, sig):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    child = subprocess.Popen([sys.executable, "-c", DRIVER, str(scan), str(tmp_path / "ws")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "drawn"
        child.send_signal(sig)
        _out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert "saving and quitting" in err
    from medsam_gui.annotation import Workspace
    from medsam_gui.io import load_volume

    lm = Workspace(tmp_path / "ws").load(load_volume(scan))
    assert int((lm.array > 0).sum()) == 100
    assert not [p for p in Path(tmp_path / "ws").rglob("*") if ".tmp-" in p.name]


def test_a_full_disk_moves_the_work_to_the_user_folder(qtbot, scan, tmp_path, tiny_disk):
    from medsam_gui.annotation import Workspace
    from medsam_gui.ui.main_window import MainWindow

    disk = tiny_disk
    w = MainWindow(background=False, workspace_dir=str(disk / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    qtbot.addWidget(w)
    open_and_wait(qtbot, w, scan)
    stroke(w, 70)
    assert w.flush_autosave()
    fill_up(disk)
    stroke(w, 71)
    assert w.flush_autosave()  # saved, in the user folder instead
    assert "instead" in w.statusBar().currentMessage()
    assert w.workspace.folder == tmp_path / "userdata" / "workspaces"
    assert int((w.workspace.load(w.volume).array > 0).sum()) == 200
    # the full disk still holds the last save it could take, whole
    assert int((Workspace(disk / "ws").load(w.volume).array > 0).sum()) == 100
    assert not [p for p in disk.rglob("*") if ".tmp-" in p.name]
    w.shutdown()
