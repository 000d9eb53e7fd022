"""The Qt-free view state of the linked views and the outline renderer, on real volumes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from conftest import DICOM, PAT1

pytestmark = pytest.mark.needs_data


def test_cursor_slices_and_crossing_views_on_brats():
    from medsam_gui.io import load_volume
    from medsam_gui.view_state import ViewState, world_coordinates

    vol = load_volume(PAT1 / "Flair_subtrMeanDivStd.nii.gz")
    state = ViewState()
    seen = []
    state.subscribe(seen.append)
    state.bind(vol)
    assert state.cursor == (120, 120, 77) and seen == [{"volume", "cursor"}]
    state.set_index("axial", 40)  # scrolling one view moves the cursor along its normal only
    assert state.cursor == (120, 120, 40)
    assert state.index("coronal") == 120 and state.index("sagittal") == 120
    state.set_cursor((-5, 500, 12))  # clamped to the volume
    assert state.cursor == (0, 239, 12)
    for view in ("axial", "coronal", "sagittal"):
        geom = vol.geometry(view)
        row, col = state.cursor_pixel(view)
        assert geom.voxel_index(state.index(view), row, col) == state.cursor
        across, down = state.crossing_views(view)
        assert vol.geometry(across).slice_axis == geom.row_axis
        assert vol.geometry(down).slice_axis == geom.col_axis
    assert state.crossing_views("axial") == ("coronal", "sagittal")
    seen.clear()
    state.set_window(state.window)  # no change, no redraw
    state.set_overlay("outline")
    state.set_layout("three")
    assert seen == [{"overlay"}, {"layout"}]
    assert state.visible_views() == ("axial", "coronal", "sagittal")
    with pytest.raises(ValueError):
        state.set_overlay("hatched")
    frame, xyz = world_coordinates(vol, (10, 20, 30))  # NIfTI: RAS, as nibabel maps it
    img = nib.load(str(PAT1 / "Flair_subtrMeanDivStd.nii.gz"))
    assert frame == "RAS"
    assert np.allclose(xyz, nib.affines.apply_affine(img.affine, (10, 20, 30)))


def test_dicom_world_coordinates_are_the_scanners_lps():
    import pydicom

    from medsam_gui.io import load_volume
    from medsam_gui.view_state import world_coordinates

    folder = DICOM / "mr_brain_sag_t1_siemens_HFS"
    vol = load_volume(folder)
    positions = [np.array(pydicom.dcmread(str(f), stop_before_pixels=True)
                          .ImagePositionPatient, float) for f in sorted(folder.iterdir())
                 if f.suffix == ".dcm" or not f.suffix]
    corners = []
    for i in (0, vol.shape[0] - 1):
        for j in (0, vol.shape[1] - 1):
            for k in range(vol.shape[2]):
                frame, xyz = world_coordinates(vol, (i, j, k))
                corners.append(np.array(xyz))
    assert frame == "LPS"
    # every slice's ImagePositionPatient (its first pixel's centre, LPS) is one of the
    # volume's corner voxels
    for p in positions:
        assert min(np.abs(c - p).max() for c in corners) < 1e-3


def test_outline_mask_is_each_labels_boundary():
    from medsam_gui.ui.render import outline_mask

    truth = np.asarray(nib.load(str(PAT1 / "OTMultiClass.nii.gz")).dataobj).astype(np.uint8)
    cross = ndimage.generate_binary_structure(2, 1)
    i, j, k = (int(c) for c in np.argwhere(truth > 0).mean(axis=0))
    for plane in (truth[:, :, k], truth[i, :, :], truth[:, j, :]):
        want = np.zeros(plane.shape, bool)
        for v in np.unique(plane[plane > 0]):
            m = plane == v
            want |= m & ~ndimage.binary_erosion(m, cross, border_value=0)
        assert want.any()
        assert np.array_equal(outline_mask(plane), want)
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False  # the slice edge is a boundary too
    assert np.array_equal(outline_mask(np.ones((3, 3), np.uint8)), ring)
