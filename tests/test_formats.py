"""Every file a Slicer / ITK-SNAP / FreeSurfer user has: NRRD, MetaImage, MGZ, NIfTI pairs, NaN
volumes and Slicer segmentations, in and out.

Each format is written by an independent writer (SimpleITK, nibabel, pynrrd) from the BRATS
FLAIR and must open on the grid the writer meant: the same voxels once reordered onto the
original grid, the affine within 1e-3 mm, the same modality guess, model input and display
slice. Three model runs: the original NIfTI, a right-anterior-superior NRRD in another voxel
order through the ``medsam-segment`` process (out as a Slicer ``.seg.nrrd``, read by slicerio)
and a NaN-holding copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from medsam_gui.annotation.exporting import export_labels
from medsam_gui.annotation.labels import Label, LabelMap, LabelTable
from medsam_gui.engine.intensity import resolve
from medsam_gui.engine.segment_cli import main as segment_main
from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from medsam_gui.io.label_import import read_segmentation
from medsam_gui.io.resample import onto_volume_grid

from conftest import PAT1, REPO

pytestmark = pytest.mark.needs_data
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
K = 70  # an axial slice through the tumour
LPS = np.diag([-1.0, -1.0, 1.0])


def _sitk_image(data: np.ndarray, affine: np.ndarray) -> "sitk.Image":
    """A SimpleITK image of x-fastest ``data`` on a RAS ``affine`` (ITK works in LPS)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    steps = LPS @ affine[:3, :3]
    spacing = np.linalg.norm(steps, axis=0)
    img.SetSpacing(spacing.tolist())
    img.SetDirection((steps / spacing).flatten().tolist())
    img.SetOrigin((LPS @ affine[:3, 3]).tolist())
    return img


@pytest.fixture(scope="module")
def ref():
    return load_volume(FLAIR)


@pytest.fixture(scope="module")
def gt():
    return np.asanyarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj) > 0


@pytest.fixture(scope="module")
def written(tmp_path_factory, ref):
    """{name: (path, the affine its writer meant)} for every format, from the visible data."""
    d = tmp_path_factory.mktemp("formats")
    data, affine = np.asanyarray(ref.data), ref.affine
    out = {}
    img = _sitk_image(data, affine)
    for name, compress in (("sitk.nrrd", True), ("sitk.mha", True), ("sitk_raw.mha", False),
                           ("sitk.mhd", True)):
        sitk.WriteImage(img, str(d / name), compress)
        out[name] = (d / name, affine)
    lps_header = {"space": "left-posterior-superior", "space directions": (LPS @ affine[:3, :3]).T,
                  "space origin": LPS @ affine[:3, 3], "encoding": "raw"}
    nrrd.write(str(d / "pynrrd_lps.nrrd"), data, lps_header, index_order="F")
    out["pynrrd_lps.nrrd"] = (d / "pynrrd_lps.nrrd", affine)
    # right-anterior-superior space, voxels reordered to RAS+ (x and y flipped), detached gzip
    canon = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    ras_header = {"space": "right-anterior-superior", "space directions": canon.affine[:3, :3].T,
                  "space origin": canon.affine[:3, 3], "encoding": "gzip"}
    nrrd.write(str(d / "pynrrd_ras.nhdr"), np.asanyarray(canon.dataobj), ras_header,
               index_order="F", detached_header=True)
    out["pynrrd_ras.nhdr"] = (d / "pynrrd_ras.nhdr", canon.affine)
    nib.save(nib.MGHImage(data, affine), str(d / "nibabel.mgz"))
    out["nibabel.mgz"] = (d / "nibabel.mgz", affine)
    nib.save(nib.Nifti1Pair(data, affine), str(d / "nibabel_pair.hdr"))
    out["nibabel_pair.hdr"] = (d / "nibabel_pair.hdr", affine)
    nib.save(nib.Nifti2Pair(data, affine), str(d / "nibabel_pair2.img"))  # opened by its .img
    out["nibabel_pair2.img"] = (d / "nibabel_pair2.img", affine)
    return out


NAMES = ["sitk.nrrd", "sitk.mha", "sitk_raw.mha", "sitk.mhd", "pynrrd_lps.nrrd",
         "pynrrd_ras.nhdr", "nibabel.mgz", "nibabel_pair.hdr", "nibabel_pair2.img"]


@pytest.mark.parametrize("name", NAMES)
def test_each_format_opens_on_the_grid_its_writer_meant(written, ref, name):
    path, meant = written[name]
    vol = load_volume(path)
    assert list_series(path) == []
    np.testing.assert_allclose(vol.affine, meant, atol=1e-3)
    placed = onto_volume_grid(vol.data, vol.affine, ref, path)
    assert placed.how in ("same", "reordered")  # never interpolated
    assert np.array_equal(placed.array, ref.data)
    assert vol.source.warnings == []
    # what the person sees and what the model is given are those of the NIfTI
    assert vol.modality == ref.modality == "MR"
    assert np.array_equal(vol.slice("axial", K), ref.slice("axial", K))
    a, b = resolve(vol), resolve(ref)
    assert (a.rule, a.lo, a.hi, a.background) == (b.rule, b.lo, b.hi, b.background)


def test_oblique_grid_agrees_with_nibabel(tmp_path, ref):
    """A rotated, anisotropic grid: SimpleITK writes it as .mha and as .nii.gz; our .mha affine
    must equal nibabel's reading of SimpleITK's NIfTI (an independent LPS/RAS conversion)."""
    c, s = np.cos(np.radians(17)), np.sin(np.radians(17))
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([0.9, 1.1, 2.5])
    affine[:3, 3] = [-101.5, 40.25, -7.0]
    img = _sitk_image(np.asanyarray(ref.data), affine)
    sitk.WriteImage(img, str(tmp_path / "oblique.mha"))
    sitk.WriteImage(img, str(tmp_path / "oblique.nii.gz"))
    vol = load_volume(tmp_path / "oblique.mha")
    np.testing.assert_allclose(vol.affine, nib.load(str(tmp_path / "oblique.nii.gz")).affine,
                               atol=1e-3)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-3)
    assert np.array_equal(vol.data, ref.data)


def _box(mask2d: np.ndarray) -> list:
    xs, ys = np.nonzero(mask2d)
    return ["--box", "2", str(K), str(xs.min()), str(ys.min()), str(xs.max()), str(ys.max())]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def reference_mask(tmp_path_factory, gt):
    """The mask medsam-segment gives on the original NIfTI (model run 1)."""
    out = tmp_path_factory.mktemp("ref") / "ref.nii.gz"
    assert segment_main([str(FLAIR), *_box(gt[:, :, K]), "--out", str(out)]) == 0
    mask = np.asanyarray(nib.load(str(out)).dataobj) > 0
    assert _dice(mask[:, :, K], gt[:, :, K]) > 0.7
    return mask


def test_ras_nrrd_through_medsam_segment_to_a_slicer_segmentation(written, ref, gt,
                                                                     reference_mask, tmp_path):
    """Model run 2, in its own process: a RAS NRRD in another voxel order in, a .seg.nrrd out
    on that NRRD's grid; mapped back onto the original it is the original's mask."""
    import slicerio

    path, meant = written["pynrrd_ras.nhdr"]
    vol = load_volume(path)
    gt_here = onto_volume_grid(gt.astype(np.uint8), ref.affine, vol, path).array
    out = tmp_path / "tumour.seg.nrrd"
    cmd = [sys.executable, "-c", "import sys; from medsam_gui.cli import segment_main; "
           "sys.exit(segment_main())", str(path), *_box(gt_here[:, :, K]), "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    seg = slicerio.read_segmentation(str(out))  # an independent reader of Slicer's format
    assert seg["voxels"].shape == vol.shape
    np.testing.assert_allclose(LPS @ seg["ijkToLPS"][:3], meant[:3], atol=1e-3)
    assert [(s["name"], s["labelValue"], s["layer"]) for s in seg["segments"]] == [
        ("label 1", 1, 0)]
    back = onto_volume_grid(seg["voxels"], LPS_affine(seg["ijkToLPS"]), ref, out)
    assert back.how == "reordered"
    assert np.array_equal(back.array > 0, reference_mask)
    imported = read_segmentation(out, ref)  # and our own import puts it on the original grid
    assert np.array_equal(imported.array > 0, reference_mask)
    assert imported.names == {1: "label 1"}


def LPS_affine(ijk_to_lps: np.ndarray) -> np.ndarray:
    out = np.array(ijk_to_lps, dtype=np.float64)
    out[:3] = LPS @ out[:3]
    return out


def test_nan_copy_opens_and_segments_like_the_original(tmp_path, ref, gt, reference_mask):
    """Model run 3: NaN everywhere outside the brain (as resampling tools write it) and +inf in
    a corner: the volume opens, the note says how many and where, the mask stays."""
    brain = np.asanyarray(nib.load(str(PAT1 / "brainmask.nii.gz")).dataobj) > 0.5
    data = np.array(ref.data, dtype=np.float32)
    data[~brain] = np.nan
    data[:2, :2, :2] = np.inf
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, ref.affine), str(path))
    vol = load_volume(path)
    assert np.array_equal(vol.data, data, equal_nan=True)  # the voxels are never changed
    n_bad = int(np.count_nonzero(~brain))
    notes = [w for w in vol.source.warnings if "not finite" in w]
    assert len(notes) == 1 and notes[0].startswith(f"{n_bad} of {data.size} voxels")
    assert f"{n_bad - 8} NaN, 8 +inf" in notes[0] and "i 0..239" in notes[0]
    assert vol.modality == "MR"
    out = tmp_path / "nan_labels.nii.gz"
    assert segment_main([str(path), *_box(gt[:, :, K]), "--out", str(out)]) == 0
    mask = np.asanyarray(nib.load(str(out)).dataobj) > 0
    d_nan, d_ref = _dice(mask[:, :, K], gt[:, :, K]), _dice(reference_mask[:, :, K], gt[:, :, K])
    assert abs(d_nan - d_ref) <= 0.01, (d_nan, d_ref)
    # nothing left to show: refused, the file named
    nrrd.write(str(tmp_path / "allnan.nrrd"), np.full((4, 5, 6), np.nan, np.float32))
    with pytest.raises(MedsamError, match=r"allnan\.nrrd: 120 of 120 voxels are not finite"):
        load_volume(tmp_path / "allnan.nrrd")


def _labelmap(shape) -> LabelMap:
    table = LabelTable([Label(1, "oedema", (0, 200, 50)), Label(2, "enhancing tumour",
                                                                (250, 20, 20))])
    lm = LabelMap(shape, table)
    labels = np.asanyarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj)
    lm.array[labels == 2] = 1
    lm.array[labels == 4] = 2
    return lm


def test_label_maps_out_in_the_source_family_verified_by_independent_readers(written, tmp_path):
    path, meant = written["pynrrd_lps.nrrd"]
    vol = load_volume(path)
    lm = _labelmap(vol.shape)
    from medsam_gui.io.formats import family_format

    assert family_format(vol.source.kind) == "nrrd"
    assert family_format(load_volume(written["sitk.mha"][0]).source.kind) == "metaimage"
    out = export_labels(lm, vol, tmp_path / "l.nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.ctbl", "l.itksnap.txt", "l.json",
                                                         "l.nrrd"]
    data, header = nrrd.read(str(out.path), index_order="F")
    assert data.dtype == np.uint8 and np.array_equal(data, lm.array)
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(LPS @ header["space directions"].T, meant[:3, :3], atol=1e-3)
    out = export_labels(lm, vol, tmp_path / "l.mha")
    back = sitk.ReadImage(str(out.path))
    assert np.array_equal(sitk.GetArrayFromImage(back).transpose(2, 1, 0), lm.array)
    np.testing.assert_allclose(LPS @ np.array(back.GetOrigin()), meant[:3, 3], atol=1e-3)
    imported = read_segmentation(tmp_path / "l.mha", vol)  # names from the table beside it
    assert np.array_equal(imported.array, lm.array)
    assert imported.names == {1: "oedema", 2: "enhancing tumour"}


def test_slicer_segmentation_round_trip_keeps_names_colours_and_voxels(written, tmp_path):
    import slicerio

    path, meant = written["pynrrd_ras.nhdr"]  # written on a RAS grid, the file in LPS
    vol = load_volume(path)
    lm = _labelmap(vol.shape)
    lm.array = np.ascontiguousarray(onto_volume_grid(
        lm.array, load_volume(FLAIR).affine, vol, path).array, dtype=np.uint16)
    out = export_labels(lm, vol, tmp_path / "tumour.seg.nrrd").path
    seg = slicerio.read_segmentation(str(out))
    assert np.array_equal(seg["voxels"], lm.array)
    np.testing.assert_allclose(LPS_affine(seg["ijkToLPS"]), meant, atol=1e-3)
    got = [(s["name"], s["labelValue"], s["layer"], [round(c * 255) for c in s["color"]])
           for s in seg["segments"]]
    assert got == [("oedema", 1, 0, [0, 200, 50]), ("enhancing tumour", 2, 0, [250, 20, 20])]
    for s in seg["segments"]:  # Extent: inclusive voxel bounds, as Slicer writes them
        idx = np.argwhere(lm.array == s["labelValue"])
        assert s["extent"] == [v for a in range(3) for v in (idx[:, a].min(), idx[:, a].max())]
    header = nrrd.read_header(str(out))
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segment0_ID"] == "Segment_1" and "TerminologyEntry:" in header["Segment0_Tags"]
    imported = read_segmentation(out, vol)
    assert np.array_equal(imported.array, lm.array)
    assert imported.names == {1: "oedema", 2: "enhancing tumour"}
    assert imported.colors == {1: (0, 200, 50), 2: (250, 20, 20)}


def test_a_segmentation_written_by_slicer_imports_with_its_names_and_colours():
    """slicerio ships a CT and an overlapping two-layer segmentation saved by 3D Slicer."""
    import slicerio

    data = Path(slicerio.__file__).parent / "data"
    ct = load_volume(data / "CTChest4.nrrd")
    assert ct.modality == "CT"
    seg = slicerio.read_segmentation(str(data / "SegmentationOverlapping.seg.nrrd"))
    imported = read_segmentation(data / "SegmentationOverlapping.seg.nrrd", ct)
    assert list(imported.names.values()) == [s["name"] for s in seg["segments"]]
    assert list(imported.colors.values()) == [
        tuple(round(c * 255) for c in s["color"]) for s in seg["segments"]]
    voxels = seg["voxels"]
    sphere = voxels[1] == 1  # the second layer's segment overlaps the first layer's
    for value, s in zip(imported.names, seg["segments"]):
        want = voxels[s["layer"]] == s["labelValue"]
        if s["layer"] == 0:
            want &= ~sphere
        assert np.array_equal(imported.array == value, want), s["name"]
    assert any("overlaps" in n for n in imported.notes)


@pytest.mark.parametrize("damage, match", [
    ("truncated", r"sitk_raw\.mha: the file is truncated"),
    ("flipped bit", r"sitk\.nrrd: the compressed file is damaged \(CRC check failed\)"),
    ("no voxel file", r"sitk\.mhd: the voxel file sitk\.zraw that this header names is not"),
    ("huge header", r"huge\.nhdr: header dimensions 240000×240000×155 need"),
    ("garbage", r"nibabel\.mgz: not a readable MGH/MGZ file"),
    ("no header", r"nibabel_pair\.img: .*its header nibabel_pair\.hdr is not beside it"),
])
def test_damaged_files_are_refused_naming_the_file(written, tmp_path, damage, match):
    src = {"truncated": "sitk_raw.mha", "flipped bit": "sitk.nrrd", "no voxel file": "sitk.mhd",
           "huge header": "pynrrd_ras.nhdr", "garbage": "nibabel.mgz",
           "no header": "nibabel_pair.hdr"}[damage]
    path = tmp_path / written[src][0].name
    raw = written[src][0].read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:-1000])
    elif damage == "flipped bit":
        path.write_bytes(raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0x10])
                         + raw[len(raw) // 2 + 1:])
    elif damage == "no voxel file":
        path.write_bytes(raw)
    elif damage == "huge header":
        path = tmp_path / "huge.nhdr"
        (tmp_path / "pynrrd_ras.raw.gz").write_bytes(
            written[src][0].with_name("pynrrd_ras.raw.gz").read_bytes())
        path.write_text(raw.decode().replace("sizes: 240 240 155", "sizes: 240000 240000 155"))
    elif damage == "garbage":
        path.write_bytes(b"not a FreeSurfer volume\n" * 20)
    else:
        (tmp_path / "nibabel_pair.img").write_bytes(b"\0" * 16)
        path = tmp_path / "nibabel_pair.img"
    with pytest.raises(MedsamError, match=match):
        load_volume(path)


def test_window_opens_a_nan_nrrd_and_exports_in_its_family(qtbot, tmp_path, ref):
    """The window: a NRRD with NaN outside the brain opens (dialog filter and drop take it), the
    open message says once how many voxels are not finite, NaN is drawn black, and Export ▸
    Label map proposes and writes a NRRD on the scan's grid."""
    from PyQt5.QtCore import QSettings

    from medsam_gui.ui.main_window import MainWindow
    from medsam_gui.ui.window_open import NIFTI_FILTER

    assert all(f"*.{e}" in NIFTI_FILTER for e in ("nrrd", "nhdr", "mha", "mhd", "mgz", "hdr"))
    brain = np.asanyarray(nib.load(str(PAT1 / "brainmask.nii.gz")).dataobj) > 0.5
    data = np.array(ref.data, dtype=np.float32)
    data[~brain] = np.nan
    path = tmp_path / "nan.nrrd"
    nrrd.write(str(path), data, {"space": "left-posterior-superior",
                                 "space directions": (LPS @ ref.affine[:3, :3]).T,
                                 "space origin": LPS @ ref.affine[:3, 3]}, index_order="F")
    w = MainWindow(background=False, workspace_dir=str(tmp_path / "ws"), load_model=False,
                   settings=QSettings(str(tmp_path / "s.ini"), QSettings.IniFormat))
    w.confirm_close = False
    qtbot.addWidget(w)
    try:
        with qtbot.waitSignal(w.volume_loaded, timeout=60000):
            w.open_path(str(path))
        message = w.statusBar().currentMessage()
        assert message.count("not finite") == 1 and f"{np.count_nonzero(~brain)} of" in message
        from medsam_gui.ui.render import windowed_uint8

        shown = windowed_uint8(w.volume.slice("axial", K), (0.0, 4.0))
        nan = np.isnan(w.volume.slice("axial", K))
        assert nan.any() and not shown[nan].any()  # background black
        assert w._default_export("_labels.nrrd").endswith("nan_labels.nrrd")
        out = w.export_labels(str(tmp_path / "nan_labels.nrrd"))
        back, header = nrrd.read(str(out), index_order="F")
        assert back.shape == ref.shape and header["space"] == "left-posterior-superior"
        np.testing.assert_allclose(header["space origin"], LPS @ ref.affine[:3, 3], atol=1e-3)
    finally:
        w.shutdown()


def test_medsam_train_reads_workspaces_of_a_metaimage_scan(written, tmp_path):
    """medsam-train works from workspaces; a workspace made on a .mha scan gives samples whose
    scan re-opens with the content hash it was annotated with."""
    from medsam_gui.training.dataset import collect_samples
    from medsam_gui.training.prepare import open_volume
    from medsam_gui.training.seed_workspace import workspace_from_labels

    path, _meant = written["sitk.mha"]
    ws = workspace_from_labels(str(path), str(PAT1 / "OTMultiClass.nii.gz"), str(tmp_path / "w"),
                               n_slices=3)
    samples = collect_samples([str(ws)])
    assert len(samples) == 3 and {s.source_path for s in samples} == {str(path)}
    vol = open_volume(samples[0])
    assert vol.source.kind == "metaimage" and vol.content_hash == samples[0].volume_id


def test_dataset_sources_take_every_volume_file_once(written):
    """A folder of them is one case per volume file: a pair by its header, no case for the
    data files beside .mhd / .nhdr / .hdr, none for a Slicer segmentation."""
    from medsam_gui.dataset.sources import discover

    folder = written["sitk.nrrd"][0].parent
    found = discover(folder)
    names = sorted(Path(c.image).name for c in found.cases)
    assert names == sorted(p.with_suffix(".hdr").name if p.suffix == ".img" else p.name
                           for p, _a in written.values())
    assert found.notes == []
    assert load_volume(discover(written["nibabel.mgz"][0]).cases[0].image).source.kind == "mgh"
