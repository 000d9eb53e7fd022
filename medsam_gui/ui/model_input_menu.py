"""Model ▸ Modality and Model ▸ Model input: what the model sees, chosen by the user.

The choice (``engine.ModelInput``) belongs to the open scan and starts as "automatic" for each
new one. Switching resolves the new input in a worker (percentiles of a large volume take a
second), then the current slice is re-encoded first and the rest lazily; embeddings of an
earlier choice stay cached, so switching back is instant. "Same as display window" follows the
window/level: it is applied when a window drag is released or a display preset is picked. The
status bar shows the active input; each mask's provenance records it. A mixin of ``MainWindow``.
"""

from __future__ import annotations

from typing import Optional

from PyQt5.QtWidgets import QActionGroup, QLabel

from medsam_gui.engine.intensity import CT_PRESETS, ModelInput, volume_modality
from medsam_gui.ui.workers import error_text, run_task

DISPLAY = "display window"


class ModelInputActions:
    """Needs MainWindow attributes (volume, session, precomputer, window_lw, statusBar …)."""

    def init_model_input(self) -> None:
        self.model_input = ModelInput()
        self.session_error: Optional[str] = None  # why no session could be made, if so
        self._input_task = None
        self._input_request: Optional[ModelInput] = None  # the latest choice asked for
        self.input_label = QLabel("input: –")
        self.input_label.setMinimumWidth(90)  # may be cut rather than widen the window
        self.input_label.setToolTip("What the model sees (Model ▸ Modality, Model ▸ Model input)")
        self.statusBar().addPermanentWidget(self.input_label)

    def reset_model_input(self) -> None:
        """A newly opened scan starts with the automatic input of its own modality."""
        self.model_input = ModelInput()
        self.input_label.setText("input: –")

    @property
    def follows_display(self) -> bool:
        return self.model_input.name == DISPLAY

    # ---- menus ----------------------------------------------------------------------------
    def add_model_input_menus(self, menu) -> None:
        current = self.model_input
        mod_menu = menu.addMenu("Modality")
        group = QActionGroup(mod_menu)
        own = ""
        if self.volume is not None:
            modality, source = volume_modality(self.volume)
            own = f" ({modality}, {'guessed from the voxels' if source == 'guess' else source})"
        for value, text in (("auto", "Automatic" + own), ("CT", "CT (Hounsfield units)"),
                            ("MR", "MR / other")):
            act = mod_menu.addAction(text)
            act.setCheckable(True)
            act.setChecked(current.modality == value)
            group.addAction(act)
            act.triggered.connect(
                lambda _c=False, v=value: self.set_model_input(self.model_input.with_modality(v)))
        mod_menu.setEnabled(self.volume is not None)

        in_menu = menu.addMenu("Model input")
        group = QActionGroup(in_menu)
        is_ct = self._effective_modality() == "CT"
        entries = [("Automatic (modality default)", ModelInput(current.modality), True),
                   ("Same as display window", self._display_choice(), True)]
        entries += [(f"CT {name} (L {lw[0]:g} / W {lw[1]:g})",
                     ModelInput.preset(name, current.modality), is_ct)
                    for name, lw in CT_PRESETS.items()]
        for i, (text, choice, enabled) in enumerate(entries):
            if i == 2:
                in_menu.addSeparator()
            act = in_menu.addAction(text)
            act.setCheckable(True)
            act.setEnabled(enabled)
            act.setChecked(choice.window == current.window and choice.name == current.name
                           if i != 1 else self.follows_display)
            group.addAction(act)
            act.triggered.connect(lambda _c=False, c=choice: self.set_model_input(c))
        in_menu.setEnabled(self.volume is not None)

    def _effective_modality(self) -> Optional[str]:
        if self.model_input.modality != "auto":
            return self.model_input.modality
        return volume_modality(self.volume)[0] if self.volume is not None else None

    def _display_choice(self) -> ModelInput:
        level, width = self.window_lw
        return ModelInput.display(level, width, self.model_input.modality)

    # ---- switching --------------------------------------------------------------------------
    def set_model_input(self, choice: ModelInput) -> None:
        """Resolve ``choice`` in a worker, then point the session at it (nothing changes on a
        bad choice: the error says why). One worker at a time: a choice made while one runs
        is started when it ends, and only the latest such choice."""
        if self.filling:  # a propagation keeps the input it started with
            self.edits_blocked()
            return
        session = self.session
        self._input_request = choice
        if session is None:  # applied when the session is made
            self.model_input = choice
            return
        if self._input_task is not None:  # started when the running one is done
            return
        self._start_model_input(session, choice)

    def _start_model_input(self, session, choice: ModelInput) -> None:
        self.statusBar().showMessage("Preparing the model input…")

        def next_request() -> bool:
            """Start the choice made while this one ran, if any, on the session of now (a
            scan opened meanwhile has its own); True when one was started."""
            self._input_task = None
            current, wanted = self.session, self._input_request
            if current is None or wanted is None or (
                    wanted == (choice if current is session else current.model_input)):
                return False
            self._start_model_input(current, wanted)
            return True

        def done(transform) -> None:
            if next_request() or self.session is not session:
                return
            self.model_input = choice
            self.show_model_input(transform)
            self.statusBar().showMessage(f"The model now sees: {transform.summary()}", 6000)
            self._update_strip_cache()
            self.precomputer.follow(session, self.view, self.index, immediate=True)

        def failed(exc) -> None:
            if self._input_request == choice:
                self._input_request = self.model_input
            self.statusBar().clearMessage()
            self.show_error("Model input not changed", error_text(exc))
            if not next_request() and self.session is session:
                self.precomputer.follow(session, self.view, self.index)  # with the old input

        self.precomputer.stop()
        self._input_task = run_task(lambda _t: session.set_model_input(choice), done, failed,
                                    name="model input")

    def show_model_input(self, transform) -> None:
        self.input_label.setText(f"input: {transform.summary()}")

    def display_window_settled(self) -> None:
        """The user released a window drag or picked a display preset."""
        if self.follows_display and self.session is not None:
            choice = self._display_choice()
            if choice.window != self.model_input.window:
                self.set_model_input(choice)
