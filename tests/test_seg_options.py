"""SEG size options reachable by the user: Export ▸ DICOM SEG offers binary / label map and
lossless compression (remembered; binary uncompressed the first time), the written file has the
chosen type and transfer syntax and reads back equal; medsam-segment takes the same choice as
--seg-type / --seg-compression and refuses a pair that cannot be written before the model."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PyQt5.QtWidgets import QDialog, QMessageBox
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from medsam_gui.io.dicom_seg import read_seg
from test_dicom_vendors import TOSHIBA
from test_gui_window import backend, cache, make_window, open_and_wait  # noqa: F401

pytestmark = pytest.mark.needs_data


def paint_two(w) -> np.ndarray:
    nx, ny, nz = w.volume.shape
    w.labelmap.array[nx // 4:nx // 2, ny // 4:ny // 2, nz // 3:nz // 2] = 1
    w.labelmap.array[nx // 2:3 * nx // 4, ny // 2:3 * ny // 4, nz // 3:nz // 2 + 2] = 2
    return w.labelmap.array.copy()


def export(qtbot, w, path, **kw):
    task = w.export_dicom("seg", str(path), **kw)
    assert task is not None
    qtbot.waitUntil(lambda: task.isFinished() and not w.statusBar().currentMessage()
                    .startswith("Writing"), timeout=60000)
    return pydicom.dcmread(str(path), stop_before_pixels=True)


def test_window_seg_options_from_the_dialog_remembered(qtbot, make_window, tmp_path,
                                                       monkeypatch):
    from medsam_gui.ui.interop_actions import SegOptionsBox
    from medsam_gui.ui.segment_types_dialog import SegmentTypesDialog

    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: None)
    w = make_window(with_model=False)
    open_and_wait(qtbot, w, TOSHIBA, session=False)
    want = paint_two(w)
    seen = []

    def choose(dialog, labelmap, compressed):
        box = dialog.findChild(SegOptionsBox)
        seen.append((box.labelmap.isChecked(), box.compressed.isChecked()))
        (box.labelmap if labelmap else box.binary).setChecked(True)
        box.compressed.setChecked(compressed)
        return QDialog.Accepted

    # first time: binary, uncompressed offered; the user picks a compressed label map
    monkeypatch.setattr(SegmentTypesDialog, "exec_", lambda d: choose(d, True, True))
    ds = export(qtbot, w, tmp_path / "a.seg.dcm")
    assert seen[0] == (False, False)
    assert ds.SegmentationType == "LABELMAP"
    assert ds.file_meta.TransferSyntaxUID == RLELossless
    assert "label map, RLE lossless" in w.last_report[1]
    assert np.array_equal(read_seg(tmp_path / "a.seg.dcm", w.volume).array, want)
    # the dialog offers the last choice; a compressed binary SEG is JPEG 2000
    monkeypatch.setattr(SegmentTypesDialog, "exec_", lambda d: choose(d, False, True))
    ds = export(qtbot, w, tmp_path / "b.seg.dcm")
    assert seen[1] == (True, True)
    assert ds.SegmentationType == "BINARY"
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert np.array_equal(read_seg(tmp_path / "b.seg.dcm", w.volume).array, want)
    # without the dialog (types given) the remembered choice holds; explicit options win
    ds = export(qtbot, w, tmp_path / "c.seg.dcm", types={})
    assert (ds.SegmentationType, ds.file_meta.TransferSyntaxUID) == ("BINARY", JPEG2000Lossless)
    ds = export(qtbot, w, tmp_path / "d.seg.dcm", types={},
                seg_options={"labelmap": False, "compression": None})
    assert (ds.SegmentationType, ds.file_meta.TransferSyntaxUID) == ("BINARY",
                                                                     ExplicitVRLittleEndian)
    assert "binary, uncompressed" in w.last_report[1]


def test_cli_seg_type_and_compression(tmp_path, capsys):
    from medsam_gui.engine.segment_cli import main
    from medsam_gui.io import load_volume

    volume = load_volume(TOSHIBA)
    nx, ny, nz = volume.shape
    box = ["--box", "2", str(nz // 2), str(nx // 3), str(ny // 3), str(2 * nx // 3),
           str(2 * ny // 3)]
    # refused before the model: a pair highdicom cannot write, options on another format
    out = tmp_path / "x.seg.dcm"
    assert main([str(TOSHIBA), *box, "--seg-compression", "rle", "--out", str(out)]) == 2
    assert "JPEG 2000 lossless only, not rle" in capsys.readouterr().err
    assert main([str(TOSHIBA), *box, "--seg-type", "labelmap",
                 "--out", str(tmp_path / "x.nii.gz")]) == 2
    assert "are for a DICOM SEG" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "x.nii.gz").exists()
    # a compressed label map through the real model reads back as the mask it wrote
    assert main([str(TOSHIBA), *box, "--seg-type", "labelmap", "--seg-compression", "jpegls",
                 "--out", str(out)]) == 0
    ds = pydicom.dcmread(str(out), stop_before_pixels=True)
    assert ds.SegmentationType == "LABELMAP"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless
    back = read_seg(out, volume).array
    assert back[:, :, nz // 2].any() and set(np.unique(back)) == {0, 1}
    assert "label map, JPEG-LS lossless" in capsys.readouterr().err
