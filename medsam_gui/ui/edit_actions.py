"""Corrections of the main window: brush/eraser strokes, fill-hole, clear, accept, undo/redo,
label table edits. Each goes through ``tools.Annotator`` (one History step) and then refreshes
the overlay and schedules the autosave. A mixin of ``MainWindow``."""

from __future__ import annotations

from PyQt5.QtWidgets import QMessageBox

from medsam_gui.ui.tools import change_slice


class EditActions:
    """Needs MainWindow attributes (annotator, labelmap, labels, view, index, …)."""

    def _on_stroke(self, mask, erase: bool) -> None:
        if self.edits_blocked():
            return
        if self.annotator is None or not self.active_label:
            return
        self.annotator.stroke(self.view, self.index, self.active_label, mask, erase)
        self._edited()

    def fill_holes(self) -> None:
        if self.edits_blocked():
            return
        if self.annotator is not None and self.active_label:
            self.annotator.fill_holes(self.view, self.index, self.active_label)
            self._edited()

    def clear_slice(self) -> None:
        if self.edits_blocked():
            return
        if self.annotator is not None and self.active_label:
            self.annotator.clear_slice(self.view, self.index, self.active_label)
            self._edited()

    def accept_slice(self) -> None:
        if self.edits_blocked():
            return
        if self.annotator is not None:
            change = self.annotator.accept(self.view, self.index)
            if not change.records_after:
                self.statusBar().showMessage("No labels on this slice to accept.", 3000)
                return
            self.changed()
            self.statusBar().showMessage(f"{self.view} slice {self.index} accepted", 3000)

    def _edited(self) -> None:
        self._refresh_overlay()
        self.changed()

    def undo(self) -> None:
        self._undo_redo(self.annotator.undo if self.annotator else None)

    def redo(self) -> None:
        self._undo_redo(self.annotator.redo if self.annotator else None)

    def _undo_redo(self, fn) -> None:
        if self.edits_blocked():
            return
        change = fn() if fn is not None else None
        if change is None:
            return
        if change.table_before is not None or change.table_after is not None:
            self.labels.refresh()
            self._rebuild_lut()
        self._show_undone(change, "Undo" if fn == getattr(self.annotator, "undo", None)
                          else "Redo")
        self._refresh_overlay()
        self.changed()

    def _show_undone(self, change, verb: str) -> None:
        """Stay on the slice the user looks at when the change touched it, or when it spans
        many slices (a propagation, an import): then say which. A change of one other slice
        goes there and says so."""
        if self.volume is None:
            return
        axis = self.volume.geometry(self.view).slice_axis
        span = None
        if change.region is not None:
            span = (int(change.region[axis][0]), int(change.region[axis][1]) - 1)
        keys = list(change.records_after) + list(change.records_before)
        here = sorted({k[1] for k in keys if k[0] == self.view})
        if (span is not None and span[0] <= self.index <= span[1]) or self.index in here:
            return  # the user sees what changed
        where = change_slice(change, self.volume)
        lo, hi = span if span is not None else (min(here), max(here)) if here else (None, None)
        if lo is not None and lo != hi and (where is None or where[0] == self.view):
            self.notify(f"{verb} changed {self.view} slices {lo}–{hi}; you stay on slice "
                        f"{self.index}.")
            return
        if where is None:
            return
        if where[0] != self.view:
            self._indices[where[0]] = where[1]
            self.set_view(where[0])
        self.set_index(where[1])
        self.notify(f"{verb}: went to {where[0]} slice {where[1]}, where the change was.")

    def delete_label(self, value: int) -> None:
        if self.edits_blocked():
            return
        lab = self.labelmap.table.get(value) if self.labelmap else None
        if lab is None:
            return
        answer = QMessageBox.question(self, "Delete label", f"Delete label {value} "
                                      f"\u201c{lab.name}\u201d and all its voxels? (Undo restores it)")
        if answer != QMessageBox.Yes:
            return
        self.annotator.push(self.labelmap.remove_label(value))
        self.labels.refresh()
        self._on_table_changed()

    def _on_table_changed(self, save: bool = True) -> None:
        if self.labelmap is None:
            return
        self.update_title()  # a renamed label
        if self.view3d is not None:
            self.view3d.refresh_colours()  # a colour or visibility: no remeshing
        self._rebuild_lut()
        self._refresh_overlay()
        if save:
            self.changed()

    def _on_label_selected(self) -> None:
        self.update_title()
        if self.labelmap is not None:
            self._rebuild_lut()
            self._refresh_overlay()
            self._update_strip_cache()  # the review states are the active label's
