"""What a wheel must carry and where user files go (the wheel itself is built, installed into
a clean venv and smoke-tested by .ci/smoke_wheel)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import medsam_gui
from medsam_gui import resources
from medsam_gui.errors import MedsamError

REPO = Path(__file__).resolve().parents[1]


def test_bundled_files_are_declared_for_the_wheel_and_the_sdist():
    manifest_in = (REPO / "MANIFEST.in").read_text()
    assert "graft resources" in manifest_in and "include models/manifest.json" in manifest_in
    for name in ("resources/style.qss", "resources/demo/brats_2013_pat0001_flair.nii.gz",
                 "resources/demo/License_CC_BY_NC_SA_3.0.txt", "models/manifest.json"):
        assert (REPO / name).is_file(), name


def test_resources_come_from_the_package_copy_when_there(tmp_path, monkeypatch):
    assert resources.data_root() == REPO  # editable install: the checkout
    bundled = tmp_path / "medsam_gui" / "_bundled"
    (bundled / "resources" / "demo").mkdir(parents=True)
    (bundled / "resources" / "demo" / "brats_2013_pat0001_flair.nii.gz").write_bytes(b"x")
    monkeypatch.setattr(resources._importlib_resources, "files",
                        lambda _pkg: tmp_path / "medsam_gui")
    assert resources.demo_volume_path() == bundled / "resources/demo/brats_2013_pat0001_flair.nii.gz"
    with pytest.raises(MedsamError, match="style.qss"):
        resources.resource_path("style.qss")


def test_new_models_go_to_the_user_folder_and_the_checkout_is_listed(tmp_path, monkeypatch):
    from medsam_gui.engine import registry

    monkeypatch.delenv("MEDSAM_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    folder = registry.models_dir()
    assert folder == tmp_path / "data" / "medsam-gui" / "models"
    assert registry.REPO_MODELS == REPO / "models"
    assert registry.model_folders() == [folder, REPO / "models"]
    bundled = json.loads(resources.bundled_manifest().read_text())
    assert "lite_medsam.pth" in bundled["checkpoints"]


def test_version_and_module_entry():
    out = subprocess.run([sys.executable, "-m", "medsam_gui", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"medsam-gui {medsam_gui.__version__}"
