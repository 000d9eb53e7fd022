"""A set of scans as one job: the dataset folder (manifest + per-case workspaces), where each
case stands, export for nnU-Net, and a model that learns between cases with a check. No Qt."""

from medsam_gui.dataset.manifest import Case, Dataset
from medsam_gui.dataset.sources import discover, discover_all
from medsam_gui.dataset.status import CaseStatus, case_status, dataset_status

__all__ = ["Case", "CaseStatus", "Dataset", "case_status", "dataset_status", "discover",
           "discover_all"]
