"""Annotations: label map on the volume grid, label table, provenance, undo/redo, workspace."""

from medsam_gui.annotation.history import History
from medsam_gui.annotation.labels import (
    Change,
    Label,
    LabelMap,
    LabelTable,
    SliceRecord,
    mask_sha256,
)
from medsam_gui.annotation.store import Workspace, WorkspaceEntry, read_dir

__all__ = [
    "Change", "History", "Label", "LabelMap", "LabelTable", "SliceRecord", "Workspace",
    "WorkspaceEntry", "mask_sha256", "read_dir",
]
