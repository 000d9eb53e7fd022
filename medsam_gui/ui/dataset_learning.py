"""Learning between cases, the worklist's lower part: marking a case done (or "Learn now")
runs ``dataset.adapt`` in the background (``adapt_worker.AdaptJob``: a progress bar and Cancel
in the dock; the window keeps working); the outcome in plain words; an adopted model used at
once; "Roll back" to the one before. A mixin of ``dataset_panel.DatasetPanel`` (which owns the
``learned`` / ``learn_failed`` signals and the dataset)."""

from __future__ import annotations

from typing import Optional

from PyQt5.QtCore import Qt, QTimer
from PyQt5.QtWidgets import QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout

from medsam_gui.dataset.adapt import AdaptConfig, AdaptResult, model_name
from medsam_gui.dataset.adapt import rollback as rollback_model
from medsam_gui.errors import MedsamError


class LearningBetweenCases:
    """Needs ``self.window``, ``self.dataset``, ``self.refresh`` and the two signals."""

    def _build_learning(self) -> QVBoxLayout:
        self.adapt_config: Optional[AdaptConfig] = None  # None: the defaults (tests set it)
        self.auto_learn = True  # learn whenever a case is marked done
        self.job = None  # the running AdaptJob
        self._again = False  # a case was marked done while learning: learn once more after
        self.learn_label = QLabel("Mark cases done and the model learns from them.")
        self.learn_label.setWordWrap(True)
        self.learn_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.learn_bar = QProgressBar()
        self.learn_bar.setTextVisible(True)
        self.learn_bar.hide()
        self.learn_button = QPushButton("Learn now")
        self.learn_button.setToolTip("Fine-tune the model on the reviewed slices of the done "
                                     "cases; it is used only if it is better on held-back cases")
        self.cancel_learn_button = QPushButton("Cancel")
        self.cancel_learn_button.hide()
        self.rollback_button = QPushButton("Roll back")
        self.rollback_button.setEnabled(False)
        self.learn_button.clicked.connect(lambda: self.learn())
        self.cancel_learn_button.clicked.connect(self.cancel_learning)
        self.rollback_button.clicked.connect(lambda: self.rollback())
        row = QHBoxLayout()
        for b in (self.learn_button, self.cancel_learn_button, self.rollback_button):
            b.setFocusPolicy(Qt.NoFocus)
            row.addWidget(b)
        box = QVBoxLayout()
        box.addWidget(self.learn_label)
        box.addWidget(self.learn_bar)
        box.addLayout(row)
        return box

    @property
    def learning(self) -> bool:
        return self.job is not None and self.job.running

    def learn(self):
        """Start a learning step in the background (once more after the running one)."""
        from medsam_gui.ui.adapt_worker import AdaptJob

        if self.dataset is None:
            return None
        if self.learning:
            self._again = True
            self.learn_label.setText("Learning… (once more afterwards, with the case just done)")
            return self.job
        backend = self.window.backend
        if backend is None:
            self.learn_label.setText("The model is not loaded yet: learning waits for it "
                                     "(Learn now).")
            return None
        self._again = False
        config = self.adapt_config or AdaptConfig(kind=backend.kind)
        job = AdaptJob(str(self.dataset.folder), backend, config, self)
        job.progress.connect(self._on_learn_progress)
        job.said.connect(lambda m: self.window.statusBar().showMessage(m, 8000))
        job.finished.connect(self._on_learned)
        job.failed.connect(self._on_learn_failed)
        self.job = job
        self.learn_label.setText(f"Learning from the done cases (the window keeps working; "
                                 f"{model_name(self.dataset)} is used until a better one is "
                                 "found)…")
        self.learn_bar.setRange(0, 0)
        self.learn_bar.show()
        self.cancel_learn_button.show()
        self.learn_button.setEnabled(False)
        self.rollback_button.setEnabled(False)
        return job.start()

    def cancel_learning(self) -> None:
        if self.learning:
            self._again = False
            self.job.cancel()

    def _on_learn_progress(self, phase: str, done: int, total: int) -> None:
        from medsam_gui.ui.adapt_worker import PHASES

        self.learn_bar.setRange(0, max(total, 1))
        self.learn_bar.setValue(done)
        self.learn_bar.setFormat(f"{PHASES.get(phase, phase)}: %v of %m")

    def _learning_ended(self) -> None:
        self.job = None  # its thread may still be returning: done as far as the panel goes
        self.learn_bar.hide()
        self.cancel_learn_button.hide()
        self.learn_button.setEnabled(True)
        if self.dataset is not None:
            self.dataset.reload()
            self.refresh()

    def _on_learned(self, result: AdaptResult) -> None:
        self._learning_ended()
        self.learn_label.setText(result.message)
        self.window.notify(result.message, 15000)
        if result.adopted:
            self.use_dataset_model()
        self.learned.emit(result)
        if self._again:
            self.learn()

    def _on_learn_failed(self, message: str) -> None:
        self._learning_ended()
        self.learn_label.setText(f"Not learned: {message}")
        self.learn_failed.emit(message)
        if self._again and not message.startswith("cancelled"):
            self.learn()

    def use_dataset_model(self) -> bool:
        """Point the window at the dataset's model for the open scan's modality (the current
        one, or the base one after a roll back to it or when the current one learned from
        other modalities only: ``Dataset.model_for``); True when a switch was started."""
        from medsam_gui.ui.model_menu import checkpoint_kind

        ds, w = self.dataset, self.window
        if ds is None:
            return False
        if getattr(w, "_loading_model", False):  # a load in progress (the start-up one) would
            QTimer.singleShot(500, self._retry_model)  # end after ours and win: wait for it
            return False
        modality = getattr(getattr(w, "volume", None), "modality", None)
        want = ds.model_for(modality)
        if want is None and ds.current_model is not None:
            w.statusBar().showMessage(
                f"This {modality} scan uses the base model: {model_name(ds)} learned from "
                f"{', '.join(ds.model_modalities())} cases only.", 10000)
        have = getattr(w.backend, "checkpoint", None) if w.backend is not None else None
        kind = getattr(w.backend, "kind", "litemedsam")
        if want is None:
            # leave the window's model alone unless it is one of this dataset's
            if have is None or not str(have).startswith(str(ds.models_dir)):
                return False
            w.switch_model(kind, None)
            return True
        if have is not None and str(have) == want:
            return False
        w.switch_model(checkpoint_kind(want, kind), want)
        return True

    def _retry_model(self) -> None:
        from PyQt5 import sip

        if not sip.isdeleted(self):
            self.use_dataset_model()

    def rollback(self) -> Optional[str]:
        """One click: the model adopted before the current one (the base before v1)."""
        if self.dataset is None or self.learning:
            return None
        try:
            said = rollback_model(self.dataset)
        except MedsamError as exc:
            self.learn_label.setText(str(exc))
            return None
        self.refresh()
        self.learn_label.setText(f"Rolled back: now using {model_name(self.dataset)}.")
        self.window.notify(said, 8000)
        self.use_dataset_model()
        return said
