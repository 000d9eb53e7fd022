"""Corrections of the main window: brush/eraser strokes, fill-hole, clear, accept (one slice or
a range), undo/redo, label table edits. Each goes through ``tools.Annotator`` (one History step)
and then refreshes the overlay and schedules the autosave. A mixin of ``MainWindow``.

Clear slice on a slice where the label has no voxel marks it as a person's "absent here": an
empty key slice, which propagation never fills or crosses (``engine.key_slices``)."""

from __future__ import annotations

from typing import Optional

from PyQt5.QtWidgets import QMessageBox

from medsam_gui.annotation import Change, review
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
            value = self.active_label
            change = self.annotator.clear_slice(self.view, self.index, value)
            if change.empty:  # nothing to clear: the person says the label is absent here
                rec = self.labelmap.records.get((self.view, self.index, value))
                if rec is None or not rec.reviewed:
                    self.annotator.push(self.labelmap.mark_edited(self.view, self.index, value))
                self.statusBar().showMessage(
                    f"{self.view} slice {self.index} marked empty for label {value}: "
                    "propagation will not fill it or go past it.", 5000)
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

    def accept_range(self, first: int, last: int) -> Optional[Change]:
        """Accept the active label on slices ``first``..``last`` of this view where it is
        filled or drawn (not yet reviewed), as one undo step."""
        if self.edits_blocked() or self.annotator is None or not self.active_label:
            return None
        value, view = self.active_label, self.view
        a, b = sorted((int(first), int(last)))
        states = review.slice_states(self.labelmap, self.volume.geometry(view), value)
        a, b = max(a, 0), min(b, len(states) - 1)
        merged = Change(description=f"accept label {value} on {view} {a}–{b}")
        for i in range(a, b + 1):
            if states[i] in (review.FILLED, review.DRAWN):
                c = self.labelmap.mark_accepted(view, i, value)
                for key, rec in c.records_before.items():
                    merged.records_before.setdefault(key, rec)
                merged.records_after.update(c.records_after)
        if not merged.records_after:
            self.statusBar().showMessage(f"Nothing to accept on {view} slices {a}–{b}.", 4000)
            return None
        self.annotator.push(merged)
        self.changed()
        self.statusBar().showMessage(
            f"Accepted label {value} on {len(merged.records_after)} slices ({view} {a}–{b}); "
            "Undo takes them back in one step.", 6000)
        return merged

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
