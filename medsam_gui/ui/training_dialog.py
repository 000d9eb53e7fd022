"""Training dialog: pick annotated data and settings, fine-tune in a worker thread, watch it
learn (pyqtgraph: training loss and validation Dice per epoch), use the new model at once.

The core trainer (``medsam_gui.training.train``) runs in a QThread; progress arrives through
queued signals, Cancel sets a flag the trainer polls before every encoder call and step, so
the window never waits on the model.
"""

from __future__ import annotations

import os
import time
from typing import List, Optional

import pyqtgraph as pg
from PyQt5.QtCore import Qt, QThread, pyqtSignal
from PyQt5.QtWidgets import (
    QCheckBox, QComboBox, QDialog, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox,
    QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar, QPushButton, QSpinBox,
    QVBoxLayout, QWidget)

from medsam_gui.errors import MedsamError
from medsam_gui.training import TrainConfig, count, mode_warning, plan
from medsam_gui.ui.training_worker import CallThread, TrainingWorker

AUTO_SPLIT = "Random volumes (fraction below)"
SLICE_SPLIT = "::slices"  # the combo's data for "blocks of this scan's slices"
ONE_VOLUME_WARNING = ("Only one scan is annotated: validation uses a block of its own slices "
                      "(not trained on, nor the 2 slices next to it). The Dice this reports is "
                      "optimistic: the model has seen this patient and this scanner. Annotate "
                      "a second scan for an honest estimate.")


def _spin(lo: float, hi: float, value: float, tip: str, decimals: int = 0):
    box = QSpinBox() if decimals == 0 else QDoubleSpinBox()
    if decimals:
        box.setDecimals(decimals)
        box.setSingleStep(10 ** -decimals if decimals < 4 else 1e-5)
    box.setRange(lo, hi)
    box.setValue(value)
    box.setToolTip(tip)
    return box


class TrainingDialog(QDialog):
    """Fine-tune ``base_backend`` on the reviewed slices of ``workspace_dirs``.

    ``cache``: the app's EmbeddingCache (slices already encoded cost nothing); by default the
    cache of ``parent.session`` when there is one, else the user's disk cache.
    """

    model_ready = pyqtSignal(str)

    def __init__(self, workspace_dirs: List[str], base_backend, parent: Optional[QWidget] = None,
                 cache=None):
        super().__init__(parent)
        self.setWindowTitle("Train on annotations")
        self.backend = base_backend
        session = getattr(parent, "session", None)
        self.cache = cache if cache is not None else getattr(session, "cache", None)
        self.result = None
        self._thread: Optional[QThread] = None
        self._worker: Optional[TrainingWorker] = None
        self._count_call: Optional[CallThread] = None
        self._recount_pending = False
        self._counts_ok = False
        self._t_phase = 0.0
        self._epochs: List[dict] = []
        self._build()
        for d in workspace_dirs:
            self._add_workspace(d)
        self.recount()

    # ------------------------------------------------------------------------ layout
    def _build(self) -> None:
        data = QGroupBox("Data: slices a person edited or accepted")
        self.ws_list = QListWidget()
        self.ws_list.setToolTip("Workspace folders with saved annotations (checked ones are used)")
        add, remove = QPushButton("Add folder…"), QPushButton("Remove")
        add.clicked.connect(self._browse)
        remove.clicked.connect(self._remove_selected)
        self.label_list = QListWidget()
        self.label_list.setToolTip("Label values to train on (one sample per label and slice)")
        self.val_combo = QComboBox()
        self.val_combo.addItem(AUTO_SPLIT)
        self.val_combo.addItem("Blocks of slices of one scan (optimistic)", SLICE_SPLIT)
        self.val_combo.setToolTip("Validation by whole volume (hold out one workspace, or "
                                  "draw volumes at random); with one annotated scan only, by "
                                  "blocks of its slices (an optimistic estimate)")
        self.counts = QLabel("counting…")
        self.counts.setWordWrap(True)
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch(1)
        form = QFormLayout()
        form.addRow("Labels", self.label_list)
        form.addRow("Validation", self.val_combo)
        box = QVBoxLayout(data)
        box.addWidget(self.ws_list)
        box.addLayout(buttons)
        box.addLayout(form)
        box.addWidget(self.counts)
        self.ws_list.setMaximumHeight(90)
        self.label_list.setMaximumHeight(70)

        params = QGroupBox("Settings")
        self.mode = QComboBox()
        self.mode.addItem("Mask decoder (fast, keeps the embedding cache)", "decoder")
        self.mode.addItem("Whole model incl. image encoder (slow on CPU)", "full")
        self.mode.setToolTip("Decoder: trains on cached slice embeddings, seconds per epoch on "
                             "a CPU. Whole model: also the image encoder; much slower, and "
                             "every slice must be re-encoded for the new model.")
        self.prompt_enc = QCheckBox("Also train the prompt encoder")
        self.prompt_enc.setToolTip("Decoder mode: let the box embedding adapt too")
        self.epochs = _spin(1, 500, 10, "Passes over the training samples (stops early when "
                            "validation Dice stops improving)")
        self.batch = _spin(1, 64, 4, "How many annotated slices the model sees before each "
                           "adjustment of its weights. Larger: steadier but needs more memory; "
                           "4 suits a CPU.")
        self.lr = _spin(1e-7, 1e-2, 1e-4, "How big each adjustment is (AdamW learning rate). "
                        "Too large forgets what the model knew; too small learns nothing. "
                        "Defaults: 1e-4 for the decoder, 1e-5 for the whole model.", decimals=6)
        self.wd = _spin(0.0, 1.0, 0.01, "Pulls the weights gently towards zero (AdamW weight "
                        "decay) so the model does not memorise your few slices; 0.01 is "
                        "usual.", decimals=3)
        self.val_fraction = _spin(0.05, 0.9, 0.2, "Share of the scans held out to measure the "
                                  "model (never trained on), drawn at random when Validation "
                                  "is automatic.", decimals=2)
        self.patience = _spin(1, 100, 3, "Stop early after this many passes without a better "
                              "validation Dice: training longer would only fit your slices, "
                              "not new scans.")
        self.seed = _spin(0, 2**31 - 1, 0, "Random seed: the same seed and data give the same "
                          "split, order and result (change it to check a result is not luck).")
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #b35c00")
        self.mode.currentIndexChanged.connect(self._mode_changed)
        pf = QFormLayout(params)
        pf.addRow("Mode", self.mode)
        pf.addRow("", self.prompt_enc)
        for name, w in (("Epochs", self.epochs), ("Batch size", self.batch),
                        ("Learning rate", self.lr), ("Weight decay", self.wd),
                        ("Validation fraction", self.val_fraction),
                        ("Early-stop patience", self.patience), ("Seed", self.seed)):
            pf.addRow(name, w)
        pf.addRow(self.warning)

        self.ensurePolished()  # the dialog's theme (the app style sheet) is in its palette now
        from PyQt5.QtGui import QPalette

        back = self.palette().color(QPalette.Window)
        fore = self.palette().color(QPalette.WindowText)
        self.plot = pg.PlotWidget(background=back)
        for axis in ("bottom", "left"):
            self.plot.getAxis(axis).setPen(pg.mkPen(fore))
            self.plot.getAxis(axis).setTextPen(pg.mkPen(fore))
        self.plot.setLabel("bottom", "epoch")
        self.plot.addLegend(offset=(-10, 10))
        self.plot.showGrid(x=True, y=True, alpha=0.3)
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen("#d62728", width=2),
                                         symbol="o", symbolSize=6, name="training loss")
        self.dice_curve = self.plot.plot([], [], pen=pg.mkPen("#1f77b4", width=2),
                                         symbol="s", symbolSize=6, name="validation Dice")
        self.before_line = pg.InfiniteLine(angle=0, movable=False,
                                           pen=pg.mkPen("#1f77b4", style=Qt.DashLine))
        self.before_line.setVisible(False)
        self.plot.addItem(self.before_line)
        self.plot.setMinimumHeight(200)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.outcome = QLabel("")
        self.outcome.setWordWrap(True)
        self.start_btn, self.cancel_btn = QPushButton("Start"), QPushButton("Cancel")
        self.use_btn, self.close_btn = QPushButton("Use this model"), QPushButton("Close")
        self.start_btn.clicked.connect(self.start)
        self.cancel_btn.clicked.connect(self.cancel)
        self.use_btn.clicked.connect(self._use)
        self.close_btn.clicked.connect(self.close)
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.hide()  # one of Cancel (while training) / Close (otherwise)
        self.use_btn.setEnabled(False)
        row = QHBoxLayout()
        for b in (self.start_btn, self.cancel_btn, self.use_btn):
            row.addWidget(b)
        row.addStretch(1)
        row.addWidget(self.close_btn)
        top = QHBoxLayout()
        top.addWidget(data, 3)
        top.addWidget(params, 2)
        lay = QVBoxLayout(self)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(self.outcome)
        lay.addLayout(row)
        self.ws_list.itemChanged.connect(lambda _: self.recount())
        self.label_list.itemChanged.connect(lambda _: self.recount())
        self.val_combo.currentIndexChanged.connect(lambda _: self.recount())
        self.val_fraction.valueChanged.connect(lambda _: self.recount())
        self.seed.valueChanged.connect(lambda _: self.recount())

    # --------------------------------------------------------------------- data side
    def _add_workspace(self, folder: str) -> None:
        folder = os.path.abspath(folder)
        if folder in self._workspaces(checked_only=False):
            return
        item = QListWidgetItem(folder)
        item.setToolTip(folder)
        item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
        item.setCheckState(Qt.Checked)
        self.ws_list.blockSignals(True)
        self.ws_list.addItem(item)
        self.ws_list.blockSignals(False)
        self.val_combo.blockSignals(True)
        self.val_combo.addItem(f"Hold out {os.path.basename(folder) or folder}", folder)
        self.val_combo.blockSignals(False)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Workspace folder")
        if folder:
            self._add_workspace(folder)
            self.recount()

    def _remove_selected(self) -> None:
        for item in self.ws_list.selectedItems():
            i = self.val_combo.findData(item.text())
            if i > 0:
                self.val_combo.removeItem(i)
            self.ws_list.takeItem(self.ws_list.row(item))
        self.recount()

    def _workspaces(self, checked_only: bool = True) -> List[str]:
        items = [self.ws_list.item(i) for i in range(self.ws_list.count())]
        return [it.text() for it in items if not checked_only or it.checkState() == Qt.Checked]

    def _labels(self) -> Optional[List[int]]:
        items = [self.label_list.item(i) for i in range(self.label_list.count())]
        chosen = [int(it.data(Qt.UserRole)) for it in items if it.checkState() == Qt.Checked]
        return None if len(chosen) == len(items) else chosen

    def config(self) -> TrainConfig:
        held = self.val_combo.currentData()
        slices = held == SLICE_SPLIT
        held = None if slices else held
        ws = [w for w in self._workspaces() if w != held]
        return TrainConfig(
            workspaces=ws, val_workspaces=[held] if held else None, labels=self._labels(),
            split="slices" if slices else "volume",
            mode=self.mode.currentData(), train_prompt_encoder=self.prompt_enc.isChecked(),
            epochs=self.epochs.value(), batch_size=self.batch.value(), lr=self.lr.value(),
            weight_decay=self.wd.value(), val_fraction=self.val_fraction.value(),
            patience=self.patience.value(), seed=self.seed.value())

    def recount(self) -> None:
        """Collect + split in a thread; show the counts or why training cannot start. While a
        count for older settings still runs, Start stays off and its answer is not shown."""
        self.start_btn.setEnabled(False)
        self._counts_ok = False
        self.counts.setStyleSheet("")
        self.counts.setText("counting…")
        if self._count_call is not None and self._count_call.isRunning():
            self._recount_pending = True
            return
        config = self.config()

        def work():
            from medsam_gui.annotation import Workspace, read_dir

            names = {}
            for w in self._workspaces(checked_only=False):
                for d in Workspace(w).entry_dirs():
                    for lab in read_dir(d)[1].table.labels:
                        names.setdefault(lab.value, lab.name)
            if not config.workspaces:
                raise MedsamError("no workspace chosen for training")
            train_s, val_s = plan(config)
            return names, count(train_s), count(val_s)

        self._count_call = CallThread(work, self)
        self._count_call.done.connect(self._counted)
        self._count_call.failed.connect(self._count_failed)
        self._count_call.finished.connect(self._count_finished)
        self._count_call.start()

    def _counted(self, value) -> None:
        if self._recount_pending:  # counted for settings that have changed since
            return
        names, ct, cv = value
        self._set_label_items(names)
        self.counts.setStyleSheet("")
        self.counts.setText(f"Training: {ct.text()}\nValidation: {cv.text()}")
        if self.val_combo.currentData() == SLICE_SPLIT:
            self.counts.setStyleSheet("color: #e0a030")
            self.counts.setText(self.counts.text() + "\n" + ONE_VOLUME_WARNING)
        self._counts_ok = True
        self.start_btn.setEnabled(self._thread is None)

    def _count_failed(self, message: str) -> None:
        if self._recount_pending:
            return
        if "at least 2 volumes" in message and "found 1" in message \
                and self.val_combo.currentData() != SLICE_SPLIT:
            # one annotated scan: offer its slices in blocks instead of refusing
            self.val_combo.setCurrentIndex(self.val_combo.findData(SLICE_SPLIT))
            return  # the recount follows the combo
        self.counts.setStyleSheet("color: #c00000")
        self.counts.setText(message)
        self.start_btn.setEnabled(False)

    def _count_finished(self) -> None:
        if self._recount_pending:
            self._recount_pending = False
            self.recount()

    def _set_label_items(self, names: dict) -> None:
        have = {int(self.label_list.item(i).data(Qt.UserRole))
                for i in range(self.label_list.count())}
        self.label_list.blockSignals(True)
        for value in sorted(set(names) - have):
            item = QListWidgetItem(f"{value} · {names[value]}")
            item.setData(Qt.UserRole, value)
            item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
            item.setCheckState(Qt.Checked)
            self.label_list.addItem(item)
        self.label_list.blockSignals(False)

    def _mode_changed(self) -> None:
        full = self.mode.currentData() == "full"
        self.lr.setValue(1e-5 if full else 1e-4)
        self.prompt_enc.setEnabled(not full)
        self.warning.setText(mode_warning(self.mode.currentData(), self.backend.device) or "")

    # ----------------------------------------------------------------------- running
    def start(self) -> None:
        if self._thread is not None:
            return
        self._epochs = []
        self.loss_curve.setData([], [])
        self.dice_curve.setData([], [])
        self.before_line.setVisible(False)
        self.outcome.setText("")
        self.result = None
        self.use_btn.setEnabled(False)
        self.start_btn.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.cancel_btn.show()
        self.close_btn.hide()
        self.status.setText("preparing…")
        self.progress.setRange(0, 0)
        self._t_phase, self._phase = time.time(), None
        cache = self.cache
        if cache is None:
            from medsam_gui.engine import EmbeddingCache

            cache = self.cache = EmbeddingCache.with_user_disk_cache()
        self._thread = QThread(self)
        self._worker = TrainingWorker(self.config(), self.backend, cache)
        self._worker.moveToThread(self._thread)
        self._thread.started.connect(self._worker.run)
        self._worker.progress.connect(self._on_progress)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._thread.start()

    def cancel(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            self.status.setText("cancelling…")
            self.cancel_btn.setEnabled(False)

    def _on_progress(self, epoch: int, step: int, total: int, m: dict) -> None:
        phase = m.get("phase")
        key = "embed" if phase == "embed" else "train"
        if key != self._phase:
            self._phase, self._t_phase, self._step0 = key, time.time(), step
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(step)
        done = step - getattr(self, "_step0", 0)
        left = ""
        if done > 0 and step < total:
            rate = (time.time() - self._t_phase) / done
            secs = int(rate * (total - step))
            left = f" — about {secs // 60}:{secs % 60:02d} left"
        if phase == "embed":
            self.status.setText(f"encoding slices {step}/{total}{left}")
        elif phase == "train":
            self.status.setText(f"epoch {epoch}, step {step}/{total}, loss {m['loss']:.4f}{left}")
        elif phase == "epoch":
            self._epochs.append(m)
            xs = [e["epoch"] for e in self._epochs]
            self.loss_curve.setData(xs, [e["train_loss"] for e in self._epochs])
            self.dice_curve.setData(xs, [e["val_dice"] for e in self._epochs])

    def _done(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        self._thread, self._worker = None, None
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.hide()
        self.close_btn.show()
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        self.start_btn.setEnabled(self._counts_ok)

    def _on_finished(self, result) -> None:
        self.result = result
        self._done()
        if result.cancelled:
            self.progress.setValue(0)
            self.status.setText("cancelled — nothing was saved; the model in use is unchanged")
            return
        self.before_line.setPos(result.val_dice_before)
        self.before_line.setVisible(True)
        kept = " (no epoch beat the base model; weights unchanged)" if result.best_epoch == 0 else ""
        self.status.setText("done")
        self.outcome.setText(
            f"Validation Dice: before {result.val_dice_before:.4f} → after "
            f"{result.val_dice_after:.4f} (best epoch {result.best_epoch}){kept}\n"
            f"Saved {result.checkpoint}")
        self.use_btn.setEnabled(True)

    def _on_failed(self, message: str) -> None:
        self._done()
        self.status.setText("failed — the model in use is unchanged")
        self.outcome.setText(message)

    def _use(self) -> None:
        if self.result is not None and self.result.checkpoint:
            self.model_ready.emit(self.result.checkpoint)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        if self._worker is not None:
            self._worker.cancel()
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        if self._count_call is not None:
            self._count_call.wait()
        super().closeEvent(event)
