"""medsam-gui: box-prompted segmentation of CT/MR volumes with Segment Anything family models.

The core (volumes, I/O, engine, annotations, training) is Qt-free; the Qt views live in
``medsam_gui.ui``.
"""

from medsam_gui.errors import MedsamError

__version__ = "0.3.0"
__all__ = ["MedsamError", "__version__"]
