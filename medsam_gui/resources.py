"""Files shipped with the package: demo volume and its licence, style sheet, model manifest.

In a checkout they live in the top-level ``resources/`` and ``models/`` folders; a wheel or
sdist build copies them into the package as ``medsam_gui/_bundled/`` (see ``setup.py``), where
they are found through ``importlib.resources``. The checkout folders are the fallback, so an
editable install (``pip install -e .``) reads them in place. Everything here is read-only:
user-written files (fine-tuned models, workspaces) go to per-user folders.
"""

from __future__ import annotations

from importlib import resources as _importlib_resources
from pathlib import Path

from medsam_gui.errors import MedsamError

CHECKOUT = Path(__file__).resolve().parent.parent  # the source tree, when this is one


def data_root() -> Path:
    """The folder holding ``resources/`` and ``models/``: the package's bundled copy, else the
    checkout."""
    bundled = Path(str(_importlib_resources.files("medsam_gui").joinpath("_bundled")))
    return bundled if (bundled / "resources").is_dir() else CHECKOUT


def resource_path(*parts: str) -> Path:
    """A file under resources/; a clear error when it is missing."""
    path = data_root().joinpath("resources", *parts)
    if not path.exists():
        raise MedsamError("bundled resource is missing (a damaged installation or an "
                          "incomplete checkout)", path)
    return path


def bundled_manifest() -> Path:
    """The read-only list of known checkpoints (models/manifest.json)."""
    return data_root() / "models" / "manifest.json"


def demo_volume_path() -> Path:
    """The bundled BRATS FLAIR sample used by ``medsam-gui --demo``."""
    return resource_path("demo", "brats_2013_pat0001_flair.nii.gz")
