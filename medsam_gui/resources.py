"""Paths of the files shipped beside the package: demo volume, style sheet, icons."""

from __future__ import annotations

from pathlib import Path

from medsam_gui.errors import MedsamError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def resource_path(*parts: str) -> Path:
    """A file under resources/; a clear error when the checkout is incomplete."""
    path = RESOURCES.joinpath(*parts)
    if not path.exists():
        raise MedsamError("bundled resource is missing (install from a full checkout)", path)
    return path


def demo_volume_path() -> Path:
    """The bundled BRATS FLAIR sample used by ``medsam-gui --demo``."""
    return resource_path("demo", "brats_2013_pat0001_flair.nii.gz")
