"""Help ▸ Keys and mouse: every shortcut of the window on one page, read from the window's
actions themselves (so the page cannot drift from the menus), plus what the mouse does."""

from __future__ import annotations

import html
from typing import List, Tuple

from PyQt5.QtGui import QKeySequence
from PyQt5.QtWidgets import QAction, QDialog, QDialogButtonBox, QTextBrowser, QVBoxLayout

MOUSE: List[Tuple[str, str]] = [
    ("Drag (Box tool)", "a box around a structure: the model draws its mask for the active "
                        "label; over an existing box it replaces that object"),
    ("Shift+drag", "another object of the same label (two kidneys, two lesions)"),
    ("Drag a box edge", "redo that box"),
    ("Left / right click (Points tool)", "include / exclude a point: refines the last box"),
    ("Drag (Brush / Eraser)", "paint / erase the active label"),
    ("Wheel, or ↑ ↓", "next / previous slice"),
    ("Ctrl+wheel", "zoom"),
    ("Middle-drag, or drag with the Pan tool", "pan"),
    ("Right-drag", "window / level (the voxels never change)"),
    ("Ctrl+click or Ctrl+drag", "move the crosshair: the other views go to that voxel"),
    ("Drag in the 3D view", "rotate; wheel: zoom; middle-drag (or Ctrl+drag): pan"),
    ("Shift+drag (or Shift+click) on the slice strip",
     "accept that range of slices as reviewed, in one undo step (also Segment ▸ Accept slices)"),
    ("Clear slice where the label is absent",
     "marks an empty key slice: propagation never fills or crosses it"),
    ("Drop a file on the window", "open it"),
]


def _menu_path(action: QAction) -> str:
    """ "Edit ▸ Undo" from the menus that hold the action (its text alone when in none)."""
    text = action.text().replace("&", "").rstrip("…").strip()
    for widget in action.associatedWidgets():
        title = getattr(widget, "title", None)
        if callable(title) and title():
            return f"{title().replace('&', '')} ▸ {text}"
    return text


def shortcut_rows(window) -> List[Tuple[str, str]]:
    """(keys, what) for every action of ``window`` that has a shortcut, sorted by menu."""
    rows = {}
    for action in window.findChildren(QAction):
        keys = [k.toString(QKeySequence.NativeText) for k in action.shortcuts() if not k.isEmpty()]
        if keys and action.text():
            rows[_menu_path(action)] = " or ".join(keys)
    return sorted(((keys, what) for what, keys in rows.items()), key=lambda r: r[1])


def page_html(window) -> str:
    def table(rows):
        return "<table cellspacing=0 cellpadding=3>" + "".join(
            f"<tr><td><b>{html.escape(a)}</b></td><td>{html.escape(b)}</td></tr>"
            for a, b in rows) + "</table>"

    return ("<h3>Keys</h3>" + table(shortcut_rows(window))
            + "<p>On a slice view the arrow keys also scroll slices.</p>"
            + "<h3>Mouse</h3>" + table(MOUSE)
            + "<p>Slice numbers count from 0, as in the file's voxel indices, the status bar "
              "and <code>medsam-segment</code>.</p>")


class KeysDialog(QDialog):
    def __init__(self, window):
        super().__init__(window)
        self.setWindowTitle("Keys and mouse")
        self.resize(620, 640)
        self.text = QTextBrowser()
        self.text.setHtml(page_html(window))
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.close)
        lay = QVBoxLayout(self)
        lay.addWidget(self.text, 1)
        lay.addWidget(buttons)


__all__ = ["KeysDialog", "MOUSE", "page_html", "shortcut_rows"]
