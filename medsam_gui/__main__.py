"""``python -m medsam_gui [PATH] [--demo] ...``: the annotator window, as ``medsam-gui``."""

import sys

from medsam_gui.cli import gui_main

if __name__ == "__main__":
    sys.exit(gui_main())
