"""Segment menu of the main window: propagate a structure through the volume, interpolate
between key slices, walk the unreviewed slices in the review queue's order (most needed first,
``annotation.review_queue``). A mixin of ``MainWindow``.

Propagation runs ``engine.propagation.propagate`` in a worker; each slice is handed to the GUI
thread as it is done and written at once (``ui.filling.FillRun``), so the structure fills in
slice by slice instead of after the whole volume is encoded. The status bar shows a progress bar and Cancel;
the run, cancelled or not, is one undo step. Edits wait while a run is going.

A range of slices is accepted in one undo step (Shift-drag on the strip, or "Accept slices…").
Exporting a label that still has unreviewed slices asks first: Export anyway, or Review now,
which goes to the first slice of the review queue (``confirm_export_reviewed``).
"""

from __future__ import annotations

import re
from typing import Optional

from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QInputDialog, QMessageBox, QProgressBar, QPushButton

from medsam_gui.annotation import review, review_queue
from medsam_gui.engine.key_slices import propagate_keys
from medsam_gui.engine.propagation import Step, StopRules
from medsam_gui.errors import MedsamError
from medsam_gui.ui.filling import FillRun, key_masks, stale_span
from medsam_gui.ui.workers import error_text, run_task

PROPAGATE_TIP = ("Follow the active label's mask on this slice up and down through the volume "
                 "(it stops where the structure ends or the model loses it; slices a person "
                 "drew, accepted or cleared are key slices: never replaced nor crossed, and "
                 "between two of them each slice takes the better-scored of the two fronts)")
INTERPOLATE_TIP = ("Fill the slices between the key slices of the active label (the slices you "
                   "drew or accepted) by morphological contour interpolation")


# the engine's stop reasons (kept terse and stable: the review queue and the CLI's JSON read
# them) in a reader's words
_PLAIN_REASONS = [
    (r"moved ([\d.]+) of its diameter \(limit ([\d.]+)\)", lambda m: (
        f"the mask jumped sideways by {_percent(float(m[1]), float(m[2]))} of its width, "
        f"limit {float(m[2]):.0%}")),
    (r"area grew ([\d.]+)x \(limit ([\d.]+)x\)", lambda m: (
        f"the mask grew {m[1]}× from one slice to the next, limit {float(m[2]):g}×")),
    (r"model IoU ([\d.]+) below ([\d.]+)", lambda m: (
        f"the model was unsure: score {m[1]}, below {m[2]}")),
    (r"mask of (\d+) px \(< (\d+)\)", lambda m: (
        f"the mask shrank to {m[1]} pixels, fewer than {m[2]}")),
    (r"empty mask", lambda m: "the structure ended"),
    (r"met the front from key slice (\d+)", lambda m: f"met the fill from slice {m[1]}"),
    (r"empty key slice (\d+)", lambda m: f"slice {m[1]} is marked empty"),
    (r"key slice (\d+)", lambda m: f"reached your slice {m[1]}"),
]


def _percent(value: float, limit: float) -> str:
    """41%; 35.3% where the whole percent would read as the limit itself (35%, limit 35%);
    "just over 35%" where one decimal would too (the engine gives the value to 0.1%)."""
    if round(value * 100) != round(limit * 100):
        return f"{value:.0%}"
    if round(value * 1000) != round(limit * 1000):
        return f"{value:.1%}"
    return f"just over {limit:.0%}" if value >= limit else f"{value:.1%}"


def plain_reason(reason: str) -> str:
    """"area grew 2.3x (limit 2x)" -> "the mask grew 2.3× from one slice to the next, limit
    2×"; reasons of several objects ("; ") each; an unknown reason as it is."""
    said = []
    for part in reason.split("; "):
        for pattern, words in _PLAIN_REASONS:
            found = re.fullmatch(pattern, part.strip())
            if found:
                part = words(found)
                break
        said.append(part)
    return "; ".join(said)


def stop_words(stop) -> str:
    """Why one direction ended, in a reader's words ("lower slices: stopped after slice 61 (the
    mask grew ...)", "higher slices: reached the last slice of the scan")."""
    way = "higher slices" if stop.direction > 0 else "lower slices"
    if stop.reason == "volume edge":
        return f"{way}: reached the {'last' if stop.direction > 0 else 'first'} slice of the scan"
    if stop.reason == "end of the given extent":
        return f"{way}: stopped at slice {stop.last_filled}, the end of the extent you set"
    return f"{way}: stopped after slice {stop.last_filled} ({plain_reason(stop.reason)})"


class PropagationActions:
    """Needs MainWindow attributes (annotator, session, labelmap, view, index, strip, …)."""

    def init_propagation_actions(self, toolbar) -> None:
        menu = self.menuBar().addMenu("&Segment")
        self.propagate_action = self._action(menu, "Propagate", self.propagate, "Ctrl+P",
                                             PROPAGATE_TIP)
        self.interpolate_action = self._action(menu, "Interpolate", self.interpolate, "Ctrl+I",
                                               INTERPOLATE_TIP)
        for act in (self.propagate_action, self.interpolate_action):
            act.setToolTip(f"{act.text()} ({act.shortcut().toString()}): {act.statusTip()}")
            toolbar.addAction(act)
        menu.addSeparator()
        self._action(menu, "Next slice to review (most needed first)",
                     lambda: self.jump_unreviewed(1), "]")
        self._action(menu, "Previous slice to review", lambda: self.jump_unreviewed(-1), "[")
        self._action(menu, "Accept slice and go to the next unreviewed", self.accept_and_next,
                     "Ctrl+Shift+Return")
        self._action(menu, "Accept slices…", self.accept_range_dialog, None,
                     "Accept the active label on a range of slices k–m in one undo step (or "
                     "Shift-drag on the strip under the slider)")
        self.strip.rangeSelected.connect(self.accept_range)
        menu.addSeparator()
        self._action(menu, "Propagation extent: start at this slice",
                     lambda: self.set_extent_end(0), "Alt+[")
        self._action(menu, "Propagation extent: end at this slice",
                     lambda: self.set_extent_end(1), "Alt+]")
        self._action(menu, "Propagation extent: whole volume", self.clear_extent)
        self.extents = {}  # view -> [first, last]
        self.fill_progress = QProgressBar()
        self.fill_progress.setMaximumWidth(160)
        self.fill_cancel = QPushButton("Cancel")
        self.fill_cancel.setToolTip("Stop the propagation; the slices done so far stay "
                                    "(one undo step)")
        for w in (self.fill_progress, self.fill_cancel):
            w.hide()
            self.statusBar().addPermanentWidget(w)
        self.fill_cancel.clicked.connect(self.cancel_fill)
        self._fill_task = None
        self._fill_run: Optional[FillRun] = None
        self._sizes_timer = QTimer(self)
        self._sizes_timer.setSingleShot(True)
        self._sizes_timer.setInterval(300)
        self._sizes_timer.timeout.connect(self.update_label_sizes)

    # ---- state -------------------------------------------------------------------------
    @property
    def filling(self) -> bool:
        return self._fill_task is not None

    def edits_blocked(self) -> bool:
        """True (with a message) while a propagation or interpolation is writing."""
        if self.filling:
            self.statusBar().showMessage("Propagation is running: wait or press Cancel.", 3000)
        return self.filling

    def review_states(self):
        """The active label's slice states; also hands the strip the review-queue scores (the
        strip asks for both whenever the label map changed)."""
        if self.labelmap is None or not self.active_label:
            return []
        geom = self.volume.geometry(self.view)
        total = sum(review_queue.WEIGHTS.values()) or 1.0
        queue = review_queue.label_queue(self.labelmap, geom, self.active_label)
        self.strip.set_scores({it.slice: it.score / total for it in queue})
        return review.slice_states(self.labelmap, geom, self.active_label)

    def review_queue_items(self):
        """The active label's review queue on this view, most needed first."""
        if self.labelmap is None or not self.active_label:
            return []
        return review_queue.label_queue(self.labelmap, self.volume.geometry(self.view),
                                        self.active_label)

    def update_label_sizes(self) -> None:
        """Volume (mL) and extent of every label in the labels panel (debounced after edits)."""
        if self.labelmap is None:
            return
        geoms = {v: self.volume.geometry(v) for v in ("axial", "coronal", "sagittal")}
        self.labels.set_sizes(review.label_sizes(self.labelmap, self.volume.spacing, geoms),
                              self.view)

    # ---- extent ------------------------------------------------------------------------
    def set_extent_end(self, which: int) -> None:
        if self.volume is None:
            return
        ext = list(self.extents.get(self.view, (0, self.volume.n_slices(self.view) - 1)))
        ext[which] = self.index
        self.extents[self.view] = sorted(ext)
        a, b = self.extents[self.view]
        self.statusBar().showMessage(f"Propagation on {self.view} limited to slices {a}–{b}", 5000)

    def clear_extent(self) -> None:
        self.extents.pop(self.view, None)
        self.statusBar().showMessage("Propagation may run through the whole volume", 4000)

    def propagation_rules(self) -> StopRules:
        ext = self.extents.get(self.view)
        return StopRules(extent=tuple(ext) if ext else None)

    # ---- propagate ---------------------------------------------------------------------
    def propagate(self) -> None:
        if self.edits_blocked() or not self._ready_to_segment():
            return
        view, seed, value = self.view, self.index, self.active_label
        keys = key_masks(self.annotator, view, value, seed)
        if not keys.get(seed):
            self.statusBar().showMessage("Draw a box on this slice first: Propagate follows "
                                         "its mask through the volume.", 5000)
            return
        session = self.session
        try:
            provenance = session.input_transform().provenance()
        except Exception as exc:
            self.show_error("The model cannot segment this scan", error_text(exc))
            return
        backend = session.backend
        run = FillRun(self.annotator, view, value, backend.name, backend.weights_sha256,
                      provenance)
        rules = self.propagation_rules()
        first, last = rules.limits(self.volume.n_slices(view))
        run.replaces = stale_span(keys, seed, rules, self.volume.n_slices(view))
        self.precomputer.stop()
        self._start_fill(run, max(last - first, 1), f"Propagating label {value}…")

        def work(task):
            for event in propagate_keys(session, view, keys, rules, writable=run.writable,
                                        cancel=task.is_cancelled, around=seed):
                task.deliver(event)

        self._fill_task = run_task(
            work, lambda _r: self._fill_done(f"propagate label {value} from {view} {seed}"),
            lambda exc: self._fill_done(f"propagate label {value} from {view} {seed}", exc),
            name="propagate", on_item=self._on_fill_event)

    def _on_fill_event(self, event) -> None:
        run = self._fill_run
        if run is None or self.labelmap is None or run.annotator is not self.annotator:
            return
        if isinstance(event, Step):
            run.add_step(event)
            self.fill_progress.setValue(min(self.fill_progress.value() + 1,
                                            self.fill_progress.maximum()))
            if event.index == self.index and run.view == self.view:
                self._refresh_overlay()
            else:  # the slice shows in the cross planes: redrawn once after a burst
                self.refresh_overlay_soon()
            self.labels_changed()
            self._sizes_timer.start()
        else:
            run.add_stop(event)
            self.fill_progress.setValue(min(self.fill_progress.value() + 1,
                                            self.fill_progress.maximum()))

    def cancel_fill(self) -> None:
        if self._fill_task is not None:
            self._fill_task.cancel()
            self.fill_cancel.setEnabled(False)

    # ---- interpolate -------------------------------------------------------------------
    def interpolate(self) -> None:
        if self.edits_blocked() or self.labelmap is None or not self.active_label:
            return
        from medsam_gui.annotation.interpolate import interpolate

        view, value, labelmap = self.view, self.active_label, self.labelmap
        geom = self.volume.geometry(view)
        run = FillRun(self.annotator, view, value)
        self._start_fill(run, 0, f"Interpolating label {value}…")
        self.fill_cancel.hide()  # one ITK call: nothing to cancel between slices

        def done(fills) -> None:
            if self._fill_run is run and run.annotator is self.annotator:
                for f in fills:
                    if run.writable(f.index):
                        run.add_interpolated(f)
            self._fill_done(f"interpolate label {value} on {view}")

        self._fill_task = run_task(
            lambda _t: interpolate(labelmap, geom, value), done,
            lambda exc: self._fill_done(f"interpolate label {value} on {view}", exc),
            name="interpolate")

    # ---- shared ------------------------------------------------------------------------
    def _start_fill(self, run: FillRun, total: int, text: str) -> None:
        self._fill_run = run
        self.fill_progress.setRange(0, total)
        self.fill_progress.setValue(0)
        self.fill_progress.setFormat("%v slices" if total else "working…")
        self.fill_cancel.setEnabled(True)
        self.fill_progress.show()
        self.fill_cancel.show()
        self.statusBar().showMessage(text)

    def _fill_done(self, description: str, exc: Optional[BaseException] = None) -> None:
        run, self._fill_run, self._fill_task = self._fill_run, None, None
        self.fill_progress.hide()
        self.fill_cancel.hide()
        if run is None or run.annotator is not self.annotator:
            return  # the scan was closed meanwhile
        cancelled = any(stop.reason == "cancelled" for stop in run.stops)
        change = run.finish(description, completed=exc is None and not cancelled)
        self._refresh_overlay()
        if change is not None:
            self.changed()
        self._bands = None
        self._update_strip_cache()
        if self.session is not None:
            self.precomputer.follow(self.session, self.view, self.index)
        if isinstance(exc, MedsamError) and not run.filled:  # e.g. fewer than two key slices
            self.statusBar().showMessage(error_text(exc), 10000)
            return
        if exc is not None:
            kept = f" The {len(run.filled)} slices done before it stay (one undo step)." \
                if run.filled else ""
            self.show_error("Propagation failed" if "propagate" in description
                            else "Interpolation failed", error_text(exc) + kept)
            return
        self.statusBar().showMessage(self.fill_summary(run), 15000)

    def fill_summary(self, run: FillRun) -> str:
        if not run.filled:
            what = "Nothing to fill"
        else:
            first, last = min(run.filled), max(run.filled)
            what = f"Filled {len(run.filled)} slices ({run.view} {first}–{last})"
        stops = "; ".join(stop_words(s) for s in sorted(run.stops, key=lambda s: -s.direction))
        return f"{what}{' — ' + stops if stops else ''}. Review with ] and [; Ctrl+Return accepts."

    def jump_unreviewed(self, step: int) -> Optional[int]:
        """Go to the next (step +1) or previous (-1) slice of the review queue, most needed
        first, and say why it is queued."""
        queue = self.review_queue_items()
        item = review_queue.next_in_queue(queue, self.index, step)
        if item is None:
            where = "after" if step > 0 else "before"
            self.statusBar().showMessage(
                "No slice of this label to review." if not queue else
                f"No slice to review {where} this one in the queue (most needed first).", 4000)
            return None
        self.set_index(item.slice)
        rank = queue.index(item) + 1
        self.statusBar().showMessage(f"To review {rank}/{len(queue)}: slice {item.slice} — "
                                     f"{item.reason} (need {item.score:.2f})", 8000)
        return item.slice

    def accept_and_next(self) -> None:
        self.accept_slice()
        self.jump_unreviewed(1)

    def accept_range_dialog(self) -> None:
        """Ask for slices "k–m" (default: the active label's unreviewed span on this view) and
        accept them in one undo step."""
        if self.labelmap is None or not self.active_label:
            return
        states = review.slice_states(self.labelmap, self.volume.geometry(self.view),
                                     self.active_label)
        todo = [i for i, s in enumerate(states) if s in (review.FILLED, review.DRAWN)]
        default = f"{todo[0]}-{todo[-1]}" if todo else f"{self.index}-{self.index}"
        text, ok = QInputDialog.getText(self, "Accept slices", f"Accept label "
                                        f"{self.active_label} on {self.view} slices (first-last):",
                                        text=default)
        if not ok:
            return
        rng = parse_range(text)
        if rng is None:
            self.statusBar().showMessage(f"Not a slice range: {text!r} (e.g. 40-52)", 5000)
            return
        self.accept_range(*rng)

    # ---- export --------------------------------------------------------------------------
    def unreviewed_slices(self):
        """{label value: [(view, slice), …]} of the filled slices no person has reviewed."""
        out = {}
        if self.labelmap is None:
            return out
        for value in sorted({k[2] for k in self.labelmap.records}):
            for view in ("axial", "coronal", "sagittal"):
                states = review.slice_states(self.labelmap, self.volume.geometry(view), value)
                out.setdefault(value, []).extend(
                    (view, i) for i, s in enumerate(states) if s == review.FILLED)
        return {v: todo for v, todo in out.items() if todo}

    def confirm_export_reviewed(self) -> bool:
        """Before an export: if a label has unreviewed slices, ask Export anyway / Review now
        (goes to the first slice of the review queue). True when the export should go on."""
        todo = self.unreviewed_slices()
        if not todo:
            return True
        names = []
        for value, where in todo.items():
            lab = self.labelmap.table.get(value)
            names.append(f"{lab.name if lab else f'label {value}'}: {len(where)} slices")
        box = QMessageBox(QMessageBox.Question, "Unreviewed slices",
                          "Some slices were filled by propagation, interpolation or an import "
                          "and no one has reviewed them yet:\n  " + "\n  ".join(names) +
                          "\n\nThe export records these labels as semi-automatic either way.",
                          parent=self)
        anyway = box.addButton("Export anyway", QMessageBox.AcceptRole)
        review_now = box.addButton("Review now", QMessageBox.RejectRole)
        box.setDefaultButton(review_now)
        self._export_question = box  # for tests
        box.exec_()
        if box.clickedButton() is anyway:
            return True
        self.review_now(todo)
        return False

    def review_now(self, todo) -> None:
        """Go to the first queued slice of the first label with unreviewed slices (the active
        label first, this view first)."""
        values = sorted(todo, key=lambda v: v != self.active_label)
        for value in values:
            views = sorted({v for v, _i in todo[value]}, key=lambda v: v != self.view)
            for view in views:
                queue = review_queue.label_queue(self.labelmap, self.volume.geometry(view), value)
                if not queue:
                    continue
                if value != self.active_label:
                    self.labels.set_active(value)
                if view != self.view:
                    self.set_view(view)
                self.set_index(queue[0].slice)
                self.statusBar().showMessage(
                    f"To review 1/{len(queue)}: slice {queue[0].slice} — {queue[0].reason}; "
                    "] goes to the next.", 8000)
                return


def parse_range(text: str) -> Optional[tuple]:
    """"40-52", "40–52", "40…52", "40..52" or "40 52" -> (40, 52); None if not a range."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(?:-|–|…|\.\.|\s)\s*(\d+)\s*", text or "")
    return None if m is None else (int(m.group(1)), int(m.group(2)))
