"""The 3D pane of the 2×2 layout: each label as a smooth surface in its colour, the scan's
outline box and the crosshair, turned with the mouse (pyqtgraph's OpenGL items).

Surfaces are made by ``label_mesh`` (marching cubes from scikit-image on the label's bounding
box, lightly smoothed, coarser steps for big labels: a decimation that bounds the triangles)
in a worker, a moment after the last edit (debounced), and only for labels whose voxels
changed. Where OpenGL cannot start (the offscreen platform of the tests, a remote session
without GL, PyOpenGL missing) the pane says so in words; meshes are still made, and every other
part of the window works as before.
"""

from __future__ import annotations

import zlib
from typing import Dict, Optional, Tuple

import numpy as np
from PyQt5.QtCore import Qt, QTimer, pyqtSignal
from PyQt5.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

Mesh = Tuple[np.ndarray, np.ndarray]  # vertices (N, 3) in voxel (i, j, k), faces (M, 3)

MAX_FACES = 60000  # per label: drawn smoothly by a software renderer too
DEBOUNCE_MS = 500


def label_mesh(array: np.ndarray, value: int, box: Optional[Tuple[slice, ...]] = None,
               max_faces: int = MAX_FACES, smooth: float = 0.7) -> Optional[Mesh]:
    """Surface of ``array == value`` in voxel-index coordinates (a vertex at (i, j, k) is the
    voxel centre), or None when the label has no voxel. ``box`` (its bounding box, e.g. from
    ``scipy.ndimage.find_objects``) saves a scan of the whole array. The mask is padded so the
    surface closes at the scan's edge, Gaussian-smoothed (``smooth`` voxels) so the surface is
    not a staircase, and meshed with a step of 1, 2, 3… voxels until it has at most
    ``max_faces`` triangles."""
    from scipy.ndimage import find_objects, gaussian_filter
    from skimage.measure import marching_cubes

    if box is None:
        found = find_objects((array == value).astype(np.uint8))
        if not found or found[0] is None:
            return None
        box = found[0]
    pad = 3
    sub = np.pad((array[box] == value).astype(np.float32), pad)
    if not sub.any():
        return None
    field = gaussian_filter(sub, smooth) if smooth else sub
    if field.max() <= 0.5:  # thinner than the smoothing: mesh the voxels as they are
        field = sub
    step = max(1, int(round((sub.size / 4e6) ** (1 / 3))))  # big labels start coarser
    while True:
        verts, faces, _n, _v = marching_cubes(field, 0.5, step_size=step, allow_degenerate=False)
        if len(faces) <= max_faces or step >= 8:
            break
        step += 1
    verts += np.array([s.start - pad for s in box], np.float32)
    return verts.astype(np.float32), faces.astype(np.int32)


def opengl_problem() -> str:
    """'' when the 3D pane can draw here, else why it cannot (in words)."""
    from PyQt5.QtGui import QGuiApplication, QOpenGLContext

    platform = QGuiApplication.platformName()
    if platform in ("offscreen", "minimal", "vnc"):
        return f"this display ({platform}) has no OpenGL"
    try:
        import OpenGL.GL  # noqa: F401
        import pyqtgraph.opengl  # noqa: F401
    except Exception as exc:  # PyOpenGL missing or its library not found
        return f"OpenGL for Python is not available ({type(exc).__name__}: {exc})"
    context = QOpenGLContext()
    if not context.create() or not context.isValid():
        return "no OpenGL context could be created on this display"
    return ""


def _world(affine: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    return ijk @ affine[:3, :3].T + affine[:3, 3]


class View3D(QWidget):
    """The 3D pane. ``set_volume`` (a new scan), ``schedule`` (labels changed: debounced),
    ``set_cursor`` (crosshair voxel); ``meshes`` holds the last surfaces, ``mesh_ready`` says
    when they are in."""

    mesh_ready = pyqtSignal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.problem = opengl_problem()
        self.volume = self.labelmap = None
        self.meshes: Dict[int, Mesh] = {}
        self._keys: Dict[int, tuple] = {}  # value -> (box, crc) of the meshed voxels
        self._items: Dict[int, object] = {}
        self._task = None
        self._again = False
        self._cursor = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.rebuild)
        self.show_surfaces = QCheckBox("Surfaces")
        self.show_surfaces.setChecked(True)
        self.show_surfaces.setToolTip("Show or hide the labels in 3D (each label's tick in the "
                                      "Labels panel hides it here too)")
        self.show_surfaces.toggled.connect(lambda _on: self.refresh_colours())
        self.status = QLabel("")
        self.status.setStyleSheet("color: #9aa0a6")
        bar = QHBoxLayout()
        bar.setContentsMargins(4, 0, 4, 0)
        bar.addWidget(QLabel("3D"))
        bar.addWidget(self.show_surfaces)
        bar.addStretch(1)
        bar.addWidget(self.status)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addLayout(bar)
        self.gl = None
        if self.problem:
            note = QLabel(f"3D view unavailable: {self.problem}.\n\nThe slice views, "
                          "editing and export work as usual.")
            note.setAlignment(Qt.AlignCenter)
            note.setWordWrap(True)
            note.setObjectName("view3dNote")
            lay.addWidget(note, 1)
            self.note = note
        else:
            import pyqtgraph.opengl as gl

            self.gl = gl.GLViewWidget()
            self.gl.setBackgroundColor((24, 25, 28))
            self.gl.setToolTip("Drag: rotate · wheel: zoom · middle-drag or Ctrl+drag: pan")
            lay.addWidget(self.gl, 1)
            self._outline = gl.GLLinePlotItem(mode="lines", color=(0.5, 0.5, 0.55, 0.6))
            self._cross = gl.GLLinePlotItem(mode="lines", color=(1, 1, 1, 0.8), width=1.5)
            for item in (self._outline, self._cross):
                self.gl.addItem(item)

    # ---- inputs -------------------------------------------------------------------------------
    def set_volume(self, volume, labelmap) -> None:
        self.volume, self.labelmap = volume, labelmap
        self.meshes, self._keys = {}, {}
        for value in list(self._items):
            self._drop_item(value)
        if self.gl is not None and volume is not None:
            self._draw_outline()
        elif self.gl is not None:  # the scan was closed
            for item in (self._outline, self._cross):
                item.setData(pos=np.zeros((0, 3), np.float32))
        self.schedule(now=True)

    def schedule(self, now: bool = False) -> None:
        """The labels changed: remesh a moment after the last change (never on each stroke)."""
        if self.labelmap is None:
            return
        self._timer.start(0 if now else DEBOUNCE_MS)

    def set_cursor(self, voxel) -> None:
        self._cursor = tuple(int(v) for v in voxel)
        if self.gl is None or self.volume is None:
            return
        shape = np.array(self.volume.shape[:3], np.float32)
        c = np.array(self._cursor, np.float32)
        ends = []
        for axis in range(3):  # a line along each voxel axis through the crosshair
            a, b = c.copy(), c.copy()
            a[axis], b[axis] = -0.5, shape[axis] - 0.5
            ends += [a, b]
        self._cross.setData(pos=_world(self.volume.affine, np.array(ends)))

    # ---- meshing ------------------------------------------------------------------------------
    def rebuild(self) -> None:
        """Remesh the labels whose voxels changed, in a worker (one at a time)."""
        from medsam_gui.ui.workers import run_task

        if self.labelmap is None:
            return
        if self._task is not None and not self._task.isFinished():
            self._again = True
            return
        labelmap, known = self.labelmap, dict(self._keys)
        values = [lab.value for lab in labelmap.table.labels]

        def work(_task):
            from scipy.ndimage import find_objects

            array = labelmap.array
            boxes = find_objects(array) if array.any() else []
            out = {}
            for value in values:
                box = boxes[value - 1] if 0 < value <= len(boxes) else None
                if box is None:
                    out[value] = (None, None)
                    continue
                key = (tuple((s.start, s.stop) for s in box),
                       zlib.crc32(np.ascontiguousarray(array[box] == value)))
                out[value] = (key, None if known.get(value) == key
                              else label_mesh(array, value, box))
            return out

        def done(out) -> None:
            self._task = None
            if labelmap is not self.labelmap:
                return
            for value, (key, mesh) in out.items():
                if key is None:
                    self.meshes.pop(value, None)
                    self._keys.pop(value, None)
                    self._drop_item(value)
                elif mesh is not None:
                    self.meshes[value], self._keys[value] = mesh, key
                    self._drop_item(value)
            for value in set(self.meshes) - set(out):  # a deleted label
                self.meshes.pop(value)
                self._keys.pop(value, None)
                self._drop_item(value)
            self.refresh_colours()
            faces = sum(len(f) for _v, f in self.meshes.values())
            self.status.setText(f"{len(self.meshes)} surface(s), {faces:,} triangles")
            self.mesh_ready.emit()
            if self._again:
                self._again = False
                self.schedule(now=True)

        def failed(exc) -> None:
            self._task = None
            self.status.setText(f"3D surfaces failed: {exc}")

        self.status.setText("making surfaces…")
        self._task = run_task(work, done, failed, name="3d surfaces")

    # ---- drawing ------------------------------------------------------------------------------
    def refresh_colours(self) -> None:
        """Colours and visibility from the label table (no remeshing)."""
        if self.gl is None or self.labelmap is None:
            return
        import pyqtgraph.opengl as gl

        for value, (verts, faces) in self.meshes.items():
            lab = self.labelmap.table.get(value)
            visible = bool(lab is not None and lab.visible and self.show_surfaces.isChecked())
            color = tuple(c / 255.0 for c in (lab.color if lab is not None else (200, 200, 200)))
            item = self._items.get(value)
            if item is None:
                data = gl.MeshData(vertexes=_world(self.volume.affine, verts), faces=faces)
                item = gl.GLMeshItem(meshdata=data, smooth=True, shader="shaded",
                                     color=color + (1.0,), drawEdges=False)
                item.setGLOptions("opaque")
                self.gl.addItem(item)
                self._items[value] = item
                self._frame()
            item.setColor(color + (1.0,))
            item.setVisible(visible)

    def _drop_item(self, value: int) -> None:
        item = self._items.pop(value, None)
        if item is not None and self.gl is not None:
            self.gl.removeItem(item)

    def _draw_outline(self) -> None:
        """The scan's box (its 12 edges) in world millimetres, and the camera on it."""
        i, j, k = (float(n) - 0.5 for n in self.volume.shape[:3])
        corners = np.array([[a, b, c] for a in (-0.5, i) for b in (-0.5, j) for c in (-0.5, k)],
                           np.float32)
        edges = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7),
                 (0, 4), (1, 5), (2, 6), (3, 7)]
        world = _world(self.volume.affine, corners)
        self._outline.setData(pos=np.array([world[e] for pair in edges for e in pair]))
        self._frame(world)

    def _frame(self, points: Optional[np.ndarray] = None) -> None:
        """Camera on ``points`` (default: every surface), seen from the front (anterior, the
        patient's right on the left, head up), as in Slicer's 3D view."""
        from PyQt5.QtGui import QVector3D

        if points is None:
            if not self.meshes:
                return
            points = np.concatenate([_world(self.volume.affine, v) for v, _f in
                                     self.meshes.values()])
        lo, hi = points.min(0), points.max(0)
        centre = (lo + hi) / 2
        self.gl.opts["center"] = QVector3D(*(float(c) for c in centre))
        self.gl.setCameraPosition(distance=float(np.linalg.norm(hi - lo)) * 1.6 + 1.0,
                                  elevation=12, azimuth=90)


__all__ = ["MAX_FACES", "View3D", "label_mesh", "opengl_problem"]
