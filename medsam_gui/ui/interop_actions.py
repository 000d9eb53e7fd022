"""File ▸ Import / Export for other tools: DICOM SEG, RT Structure Set, label maps and label
descriptions made elsewhere. A mixin of ``MainWindow``; the work is ``annotation.exporting``,
``io.label_import`` and ``annotation.importing``, run in workers.

DICOM exports need DICOM instances to reference, so they are offered only for a scan opened
from DICOM; for a NIfTI scan the menu entries are disabled and say why. A SEG's type (binary or
label map) and lossless compression are chosen under the segment types (``SegOptionsBox``,
remembered); the default, binary uncompressed, is what every SEG reader takes and what dciodvfy
validates.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

from PyQt5.QtWidgets import (QCheckBox, QDialog, QFileDialog, QGroupBox, QMessageBox,
                             QRadioButton, QVBoxLayout)

from medsam_gui.annotation.change import Change
from medsam_gui.annotation.importing import import_segmentation
from medsam_gui.annotation.labels import PALETTE, Label, LabelTable
from medsam_gui.annotation.review import label_values
from medsam_gui.errors import MedsamError
from medsam_gui.io.formats import FORMAT_NAMES
from medsam_gui.ui.workers import Task, error_text, run_task
from medsam_gui.volume import view_for_axis

DICOM_FILTER = "DICOM (*.dcm);;All files (*)"
IMPORT_FILTER = ("Segmentations (*.nii *.nii.gz *.nrrd *.mha *.mhd *.mgz *.dcm);;"
                 "NIfTI label map (*.nii *.nii.gz);;3D Slicer segmentation (*.seg.nrrd);;"
                 "NRRD / MetaImage / MGZ label map (*.nrrd *.nhdr *.mha *.mhd *.mgz *.mgh);;"
                 "DICOM SEG or RT Structure Set (*.dcm);;All files (*)")
DESCRIPTION_FILTER = ("Label descriptions (*.txt *.ctbl *.json);;ITK-SNAP (*.txt);;"
                      "3D Slicer colour table (*.ctbl *.txt);;medsam-gui table (*.json)")
NO_DICOM_TIP = ("This scan was opened from NIfTI: there are no DICOM instances for a SEG or RT "
                "Structure Set to reference. Export NIfTI instead (names and colours go into "
                "ITK-SNAP and Slicer label files beside it), or open the DICOM series.")


class SegOptionsBox(QGroupBox):
    """The SEG's type and compression, in a reader's terms (sizes from bench_interop: the
    512x512x20 CT with 31 organs is 17 MB binary, 0.4 MB compressed, 0.16 MB as a compressed
    label map)."""

    def __init__(self, labelmap: bool = False, compressed: bool = False, parent=None):
        super().__init__("DICOM SEG encoding", parent)
        layout = QVBoxLayout(self)
        self.binary = QRadioButton("Binary: one frame per segment and slice (every SEG reader; "
                                   "the default)")
        self.labelmap = QRadioButton("Label map: one frame per slice holding all segments "
                                     "(smaller; new in DICOM 2024, not every viewer reads it)")
        self.compressed = QCheckBox("Compress losslessly (JPEG 2000 for binary, RLE for a "
                                    "label map): many times smaller")
        self.binary.setToolTip("BINARY Segmentation: read by 3D Slicer, OHIF, ITK-SNAP via "
                               "dcmqi and PACS viewers; large for many labels")
        self.labelmap.setToolTip("LABELMAP Segmentation (DICOM Supplement 243): one 8/16-bit "
                                 "frame per slice, label values kept")
        self.compressed.setToolTip("Lossless: the voxels read back exactly (checked after "
                                   "writing). Some older viewers cannot decode JPEG 2000.")
        (self.labelmap if labelmap else self.binary).setChecked(True)
        self.compressed.setChecked(compressed)
        for widget in (self.binary, self.labelmap, self.compressed):
            layout.addWidget(widget)

    def options(self) -> Dict[str, object]:
        """``write_seg`` keyword arguments (labelmap, compression)."""
        from medsam_gui.io.dicom_seg import seg_compression

        labelmap = self.labelmap.isChecked()
        return {"labelmap": labelmap,
                "compression": seg_compression(labelmap, self.compressed.isChecked())}


class InteropActions:
    """Needs MainWindow attributes (volume, labelmap, annotator, labels, statusBar…)."""

    def init_interop_actions(self, file_menu) -> None:
        self._action(file_menu, "Import segmentation…", self.import_segmentation_dialog,
                     tip="A NIfTI label map, DICOM SEG or RT Structure Set of this scan, "
                     "to correct it here")
        self._action(file_menu, "Import label descriptions…", self.import_descriptions,
                     tip="Names and colours from an ITK-SNAP or 3D Slicer label file")
        menu = file_menu.addMenu("Export")
        menu.setToolTipsVisible(True)
        self.export_action = self._action(menu, "Label map (NIfTI, NRRD, MetaImage, Slicer)…",
                                          self.export_labels, "Ctrl+E",
                                          "Label map on the scan's grid (NIfTI, NRRD or "
                                          "MetaImage, by default the scan's own), with its label "
                                          "table for ITK-SNAP and 3D Slicer; or a 3D Slicer "
                                          "segmentation (.seg.nrrd)")
        self.dicom_export_actions = {
            "seg": self._action(menu, "DICOM Segmentation (SEG)…",
                                lambda: self.export_dicom("seg")),
            "rtstruct": self._action(menu, "RT Structure Set…",
                                     lambda: self.export_dicom("rtstruct")),
        }
        menu.addSeparator()
        self._action(menu, "Label table (JSON)…", self.export_table)
        self._interop_task: Optional[Task] = None
        self.update_interop_actions()

    def update_interop_actions(self) -> None:
        """Enable the DICOM exports only for a scan opened from DICOM."""
        dicom = self.volume is not None and self.volume.source.kind == "dicom"
        for fmt, act in self.dicom_export_actions.items():
            act.setEnabled(dicom)
            act.setToolTip(f"{FORMAT_NAMES[fmt]} referencing the open DICOM series" if dicom
                           else NO_DICOM_TIP)

    # ---- export ------------------------------------------------------------------------------
    def _present_labels(self):
        present = set(label_values(self.labelmap.array))
        labels = [lab for lab in self.labelmap.table.labels if lab.value in present]
        labels += [Label(v, f"label {v}", PALETTE[(v - 1) % len(PALETTE)])
                   for v in sorted(present - {lab.value for lab in labels})]
        return labels

    def _seg_options_box(self) -> SegOptionsBox:
        """The SEG options as last chosen (binary, uncompressed the first time)."""
        def flag(key: str) -> bool:
            return str(self.settings.value(key, "false")).lower() == "true"

        return SegOptionsBox(flag("export/seg_labelmap"), flag("export/seg_compressed"))

    def _remember_seg_options(self, options: Dict[str, object]) -> None:
        self.settings.setValue("export/seg_labelmap", bool(options.get("labelmap")))
        self.settings.setValue("export/seg_compressed", options.get("compression") is not None)

    def export_dicom(self, fmt: str, path: Optional[str] = None,
                     types: Optional[Dict[int, str]] = None,
                     seg_options: Optional[Dict[str, object]] = None) -> Optional[Task]:
        """Write a SEG or RT Structure Set in a worker; ``path``/``types`` skip the dialogs
        (``seg_options``: ``write_seg``'s labelmap/compression, else as last chosen)."""
        if self.labelmap is None:
            return None
        if self.volume.source.kind != "dicom":
            QMessageBox.information(self, f"{FORMAT_NAMES[fmt]} not available", NO_DICOM_TIP)
            return None
        labels = self._present_labels()
        if not labels:
            self.show_error("Nothing to export", "The label map is empty.")
            return None
        if types is None:
            if not self.confirm_export_reviewed():  # unreviewed slices: export anyway?
                return None
            from medsam_gui.ui.segment_types_dialog import SegmentTypesDialog

            box = self._seg_options_box() if fmt == "seg" and seg_options is None else None
            dialog = SegmentTypesDialog(labels, f"Export {FORMAT_NAMES[fmt]}", self, box)
            if dialog.exec_() != QDialog.Accepted:
                return None
            types = dialog.types()
            if box is not None:
                seg_options = box.options()
                self._remember_seg_options(seg_options)
        if fmt == "seg" and seg_options is None:
            seg_options = self._seg_options_box().options()
        if path is None:
            suffix = ".seg.dcm" if fmt == "seg" else ".rtstruct.dcm"
            path, _f = QFileDialog.getSaveFileName(self, f"Export {FORMAT_NAMES[fmt]}",
                                                   self._default_export(suffix), DICOM_FILTER)
            if not path:
                return None
        self._remember_types(types)
        snap, volume = self._snapshot(), self.volume

        def work(_task):
            from medsam_gui.annotation.exporting import export_labels

            return export_labels(snap, volume, path, fmt, types,
                                 seg_options if fmt == "seg" else None)

        def done(result) -> None:
            self._set_busy(False)
            self.remember_export(result.path)
            count = f"{len(result.segments)} segment(s)"
            if fmt == "seg":
                from medsam_gui.io.dicom_seg import seg_variant

                size = os.path.getsize(result.path) / 1e6
                count += f" ({seg_variant(**seg_options)}, {size:.2f} MB)"
            self.report_export(FORMAT_NAMES[fmt], result.path, result.notes, count)

        def failed(exc) -> None:
            self._set_busy(False)
            self.show_error("Export failed", error_text(exc))

        self._set_busy(True)
        self.statusBar().showMessage(f"Writing the {FORMAT_NAMES[fmt]}…")
        self._interop_task = run_task(work, done, failed, name="export")
        return self._interop_task

    def report_export(self, what: str, path, notes, count: str = "") -> None:
        """After an export: what was written, where, which slices and whether a person reviewed
        them, in words; the full path, UIDs and notes behind Details (and in View ▸ Messages)."""
        from medsam_gui.ui.messages import label_lines, show_report

        path = os.fspath(path)
        lines = label_lines(self.labelmap, self.volume, self.view)
        text = (f"Exported {count + ' as ' if count else 'the labels as '}{what}:\n"
                f"{os.path.basename(path)}\nin the folder {os.path.dirname(path)}\n\n"
                + "\n".join(lines) + "\n\nRead back and checked against the label map; it "
                "has the scan's exact grid.")
        if any("not yet reviewed" in line or "none reviewed" in line for line in lines):
            text += ("\nSlices not yet reviewed were filled by propagation or interpolation "
                     "(or imported): check them before clinical use.")
        details = f"File: {path}\n" + "\n".join(f"• {n}" for n in notes)
        self.notify(f"Exported {what} to {path}")
        show_report(self, f"{what} exported", text, details)

    def _remember_types(self, types: Dict[int, str]) -> None:
        """Keep the chosen segment types in the label table (saved with the workspace)."""
        changed = False
        for value, key in types.items():
            lab = self.labelmap.table.get(value)
            if lab is not None and lab.property_type != key:
                lab.property_type = key
                changed = True
        if changed:
            self.changed()

    # ---- import ------------------------------------------------------------------------------
    def import_segmentation_dialog(self) -> Optional[Task]:
        if self.volume is None:
            return None
        path, _f = QFileDialog.getOpenFileName(self, "Import segmentation", self._last_dir(),
                                               IMPORT_FILTER)
        return self.import_segmentation(path) if path else None

    def import_segmentation(self, path: str, mode: Optional[str] = None) -> Optional[Task]:
        """Read ``path`` in a worker, then apply it (``mode`` replace/merge, else ask)."""
        if self.volume is None or self.labelmap is None or self.edits_blocked():
            return None
        volume = self.volume

        def work(_task):
            from medsam_gui.io.label_import import read_segmentation

            return read_segmentation(path, volume)

        def done(imported) -> None:
            self._set_busy(False)
            if self.volume is volume:
                self._apply_import(Path(path), imported, mode)

        def failed(exc) -> None:
            self._set_busy(False)
            self.statusBar().clearMessage()
            self.show_error("Cannot import", error_text(exc))

        self._set_busy(True)
        self.statusBar().showMessage(f"Reading {os.path.basename(path)}…")
        self._interop_task = run_task(work, done, failed, name="import")
        return self._interop_task

    def _apply_import(self, path: Path, imported, mode: Optional[str]) -> None:
        if mode is None:
            mode = "replace"
            if self.labelmap.array.any():
                mode = self._ask_import_mode(path, imported)
                if mode is None:
                    self.statusBar().showMessage("Import cancelled; nothing changed.", 5000)
                    return
        geometry = view_for_axis(self.volume.affine, self.volume.shape, 2)
        try:
            change, mapping = import_segmentation(self.labelmap, imported, geometry, path, mode)
        except ValueError as exc:
            self.show_error("Cannot import", f"{path}: {exc}")
            return
        self.annotator.push_import(change)
        self.labels.refresh()
        self._rebuild_lut()
        self._refresh_overlay()
        self.changed()
        self.update_label_sizes()
        n = len(mapping)
        msg = (f"Imported {n} label{'s' if n != 1 else ''} from {path.name} ({mode}); the "
               f"{geometry.view} slices are marked unreviewed until you accept or edit them")
        self.statusBar().showMessage("; ".join([msg] + imported.notes), 15000)
        warnings = [note for note in imported.notes
                    if any(w in note for w in ("resampled", "outside", "left out"))]
        if warnings:
            title = ("Imported onto another grid" if any("resampled" in w for w in warnings)
                     else "Imported, with parts left out")
            QMessageBox.warning(self, title, "\n\n".join(warnings))

    def _ask_import_mode(self, path: Path, imported=None) -> Optional[str]:
        import numpy as np

        overlap = ""
        array = getattr(imported, "array", None)
        if array is not None and array.shape == self.labelmap.array.shape:
            both = int(np.count_nonzero((array > 0) & (self.labelmap.array > 0)))
            overlap = (f" {both:,} voxels have a label in both: there the current label stays "
                       "and the imported one is left out." if both else
                       " No voxel has a label in both.")
        box = QMessageBox(self)
        box.setWindowTitle("Import segmentation")
        box.setText(f"The scan already has labels. What should {path.name} do?")
        box.setInformativeText("Replace: the imported labels take their place (Undo brings "
                               "them back).\nAdd: the imported labels are added under new "
                               "values, only where there is no label yet." + overlap)
        self._import_question = box.informativeText()
        replace = box.addButton("Replace", QMessageBox.DestructiveRole)
        merge = box.addButton("Add to current labels", QMessageBox.AcceptRole)
        box.addButton(QMessageBox.Cancel)
        box.exec_()
        clicked = box.clickedButton()
        return "replace" if clicked is replace else "merge" if clicked is merge else None

    def import_descriptions(self, path: Optional[str] = None) -> bool:
        """Names and colours for the labels from an ITK-SNAP / Slicer / JSON file (undoable)."""
        if self.labelmap is None or self.edits_blocked():
            return False
        if path is None:
            path, _f = QFileDialog.getOpenFileName(self, "Import label descriptions",
                                                   self._last_dir(), DESCRIPTION_FILTER)
            if not path:
                return False
        from medsam_gui.io.label_import import read_label_descriptions

        try:
            descriptions = read_label_descriptions(path)
        except MedsamError as exc:
            self.show_error("Cannot import label descriptions", error_text(exc))
            return False
        present = set(label_values(self.labelmap.array))
        table = LabelTable.from_json(self.labelmap.table.to_json())
        known = {lab.value for lab in table.labels}
        used = 0
        for d in descriptions:
            if d.value in known:
                table.rename(d.value, d.name)
                table.recolor(d.value, d.color)
                used += 1
            elif d.value in present:
                table.labels.append(Label(d.value, d.name, d.color))
                used += 1
        table.labels.sort(key=lambda lab: lab.value)
        change = Change(description=f"label descriptions from {os.path.basename(path)}",
                        table_before=self.labelmap.table.to_json(), table_after=table.to_json())
        self.labelmap.table.labels = table.labels
        self.annotator.push(change)
        self.labels.refresh()
        self._on_table_changed()
        skipped = len(descriptions) - used
        self.statusBar().showMessage(
            f"Names and colours of {used} label(s) from {os.path.basename(path)}"
            + (f"; {skipped} entries name labels this scan does not have" if skipped else ""),
            8000)
        return True
