"""Annotations: label map on the volume grid, label table, provenance, undo/redo, workspace."""

from medsam_gui.annotation.change import Change
from medsam_gui.annotation.history import History
from medsam_gui.annotation.labels import (
    Label,
    LabelMap,
    LabelTable,
    SliceRecord,
    mask_sha256,
)
from medsam_gui.annotation.placement import (Placement, beside_scan, place_workspace,
                                             user_workspace)
from medsam_gui.annotation.store import Restored, Workspace, WorkspaceEntry, read_dir

__all__ = [
    "Change", "History", "Label", "LabelMap", "LabelTable", "Placement", "Restored", "SliceRecord",
    "Workspace", "WorkspaceEntry", "beside_scan", "mask_sha256", "place_workspace", "read_dir",
    "user_workspace",
]
