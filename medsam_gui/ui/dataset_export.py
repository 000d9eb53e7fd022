"""File ▸ Export ▸ Dataset (nnU-Net v2)…: the open dataset's done cases in nnU-Net's raw layout,
written by ``dataset.export.export_nnunet`` in a worker.

The folder rules are those of the other exports: the dialog starts in the last export folder
(remembered), else the user's documents folder, never the dataset's or a scan's own folder; the
chosen folder is remembered for the next export. The user picks the parent folder (nnU-Net's
``nnUNet_raw``); the export goes into a new ``DatasetNNN_<name>`` inside it, NNN the first
number no folder there uses, since nnU-Net finds datasets by that name and never overwrites
anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from PyQt5.QtCore import QStandardPaths, Qt
from PyQt5.QtWidgets import QFileDialog, QProgressDialog

from medsam_gui.errors import MedsamError
from medsam_gui.ui.workers import Task, error_text, run_task


def default_parent(window) -> str:
    """The remembered export folder if it is writable, else documents, else home; never
    inside the dataset folder (the export is for another program)."""
    ds = window.dataset_panel.dataset
    folder = str(window.settings.value("export/folder", "") or "")
    inside = ds is not None and folder and \
        os.path.realpath(folder).startswith(os.path.realpath(ds.folder))
    if not (folder and os.path.isdir(folder) and os.access(folder, os.W_OK)) or inside:
        folder = QStandardPaths.writableLocation(QStandardPaths.DocumentsLocation)
        if not (folder and os.path.isdir(folder)):
            folder = os.path.expanduser("~")
    return folder


def nnunet_folder(parent: str, name: str) -> Path:
    """``parent/DatasetNNN_<name>`` with the first NNN (001..999) no folder there uses."""
    used = set()
    try:
        for entry in os.listdir(parent):
            m = re.match(r"Dataset(\d{3})_", entry)
            if m:
                used.add(int(m.group(1)))
    except OSError:
        pass
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "medsam"
    n = next((k for k in range(1, 1000) if k not in used), None)
    if n is None:
        raise MedsamError("every DatasetNNN number is taken in this folder", parent)
    return Path(parent) / f"Dataset{n:03d}_{safe}"


def export_dataset_dialog(window) -> Optional[Task]:
    if window.dataset_panel.dataset is None:
        window.show_error("Export dataset", "Open a dataset first (File ▸ Open dataset…).")
        return None
    parent = QFileDialog.getExistingDirectory(
        window, "Export the done cases for nnU-Net: choose the nnUNet_raw folder",
        default_parent(window))
    return export_dataset(window, parent) if parent else None


def export_dataset(window, parent: str, all_cases: bool = False) -> Optional[Task]:
    """Export into a new ``DatasetNNN_<name>`` folder of ``parent`` in a worker."""
    from medsam_gui.dataset.export import export_nnunet
    from medsam_gui.ui.messages import show_report

    ds = window.dataset_panel.dataset
    if ds is None:
        return None
    if os.path.realpath(parent).startswith(os.path.realpath(ds.folder)):
        window.show_error("Export dataset", "Choose a folder outside the dataset folder: the "
                          "export is for nnU-Net, the dataset folder is the worklist's own.")
        return None
    if window.labelmap is not None and not window.flush_autosave():
        window.show_error("Export dataset", "The open case could not be saved; export after "
                          "saving it.")
        return None
    try:
        out = nnunet_folder(parent, ds.name)
    except MedsamError as exc:
        window.show_error("Export dataset", str(exc))
        return None
    dialog = QProgressDialog("Exporting the done cases for nnU-Net…", "", 0, 1, window)
    dialog.setWindowTitle("Export dataset")
    dialog.setCancelButton(None)
    dialog.setWindowModality(Qt.WindowModal)
    dialog.setMinimumDuration(500)

    def work(task: Task):
        return export_nnunet(ds, out, all_cases=all_cases,
                             progress=lambda k, n, _c: task.report(k, n))

    def done(result) -> None:
        dialog.reset()
        dialog.close()
        window.remember_export(result.folder)  # the next export starts in ``parent``
        labels = ", ".join(f"{v} {k}" for k, v in result.labels.items())
        text = (f"Exported {len(result.cases)} done case{'s' if len(result.cases) != 1 else ''}"
                f" for nnU-Net v2:\n{result.folder.name}\nin the folder {result.folder.parent}"
                f"\n\nLabels: {labels}.\nTrain with: nnUNetv2_plan_and_preprocess -d "
                f"{int(result.folder.name[7:10])}")
        if result.notes:
            text += "\n\n" + "\n".join(result.notes)
        details = f"Folder: {result.folder}\nCases: {', '.join(result.cases)}"
        window.notify(f"Exported the dataset for nnU-Net to {result.folder}")
        show_report(window, "Dataset exported", text, details)
        window.dataset_export_done = result

    def failed(exc) -> None:
        dialog.reset()
        dialog.close()
        window.show_error("Export failed", error_text(exc))

    task = run_task(work, done, failed, name="export dataset",
                    on_progress=lambda d, t: (dialog.setMaximum(max(t, 1)),
                                              dialog.setValue(d)))
    window._dataset_export_task = task
    return task
