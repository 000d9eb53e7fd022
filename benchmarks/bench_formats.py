"""Load time and peak memory of every volume format, side by side with the NIfTI path.

A BRATS FLAIR (240x240x155 float32, 34 MB of voxels) is written by independent writers
(SimpleITK, nibabel, pynrrd) as NRRD (raw, gzip, detached .nhdr), MetaImage (.mha, .mhd + .raw
/ .zraw), MGZ and a NIfTI pair, then read in a fresh process per (reader, file), best of
``--repeat``: seconds, and peak resident memory above the process's state after its imports
(VmHWM - VmRSS), as a multiple of the voxel bytes. Ratios are to ``load_volume`` on the
.nii / .nii.gz of the same voxels in the same run.

    .venv/bin/python benchmarks/bench_formats.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_model_input import cpu_model  # noqa: E402

SOURCE = HERE.parent.parent / "shared" / "data" / "brain_tumour_brats2015" / \
    "brats_2013_pat0001_1" / "Flair_subtrMeanDivStd.nii.gz"

CHILD = r"""
import sys, time, json
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
reader, path = sys.argv[1], sys.argv[2]
import numpy as np
if reader == 'import':  # what opening the first NRRD / MetaImage costs once per process
    base = status('VmRSS')
    t = time.perf_counter()
    import SimpleITK, nrrd
    print(json.dumps({'s': time.perf_counter() - t, 'peak': status('VmRSS') - base,
                      'bytes': 1}))
    sys.exit(0)
if reader == 'load_volume':
    import SimpleITK, nrrd  # imported on first use by load_volume: measured apart ('import')
    from medsam_gui.io import load_volume
    def read(p):
        return load_volume(p).data
elif reader == 'SimpleITK':
    import SimpleITK as sitk
    def read(p):
        return sitk.GetArrayFromImage(sitk.ReadImage(p))
elif reader == 'itk':
    import itk
    itk.imread  # the lazy loader's first use is part of the import, not of the read
    itk.ImageFileReader
    def read(p):
        return itk.array_from_image(itk.imread(p))
elif reader == 'pynrrd':
    import nrrd
    def read(p):
        return nrrd.read(p)[0]
elif reader == 'nibabel':
    import nibabel as nib
    def read(p):
        return np.asanyarray(nib.load(p).dataobj)
base = status('VmRSS')
t = time.perf_counter()
arr = read(path)
dt = time.perf_counter() - t
print(json.dumps({'s': dt, 'peak': status('VmHWM') - base, 'bytes': int(arr.nbytes)}))
"""


def write_files(folder: Path) -> dict:
    import nibabel as nib
    import nrrd
    import numpy as np
    import SimpleITK as sitk

    img = nib.load(str(SOURCE))
    data = np.asanyarray(img.dataobj)
    out = {}
    for name in ("flair.nii", "flair.nii.gz"):
        nib.save(nib.Nifti1Image(data, img.affine), str(folder / name))
        out[name] = folder / name
    nib.save(nib.Nifti1Pair(data, img.affine), str(folder / "flair.hdr"))
    out["flair.hdr (+.img)"] = folder / "flair.hdr"
    nib.save(nib.MGHImage(data, img.affine), str(folder / "flair.mgz"))
    out["flair.mgz"] = folder / "flair.mgz"
    lps = np.diag([-1.0, -1.0, 1.0]) @ img.affine[:3, :3]
    origin = np.diag([-1.0, -1.0, 1.0]) @ img.affine[:3, 3]
    header = {"space": "left-posterior-superior", "space directions": lps.T,
              "space origin": origin, "encoding": "raw"}
    nrrd.write(str(folder / "flair_raw.nrrd"), data, header, index_order="F")
    out["flair_raw.nrrd (pynrrd)"] = folder / "flair_raw.nrrd"
    header["encoding"] = "gzip"
    nrrd.write(str(folder / "flair_gz.nrrd"), data, header, index_order="F")
    out["flair_gz.nrrd (pynrrd)"] = folder / "flair_gz.nrrd"
    header["encoding"] = "raw"
    nrrd.write(str(folder / "flair.nhdr"), data, header, index_order="F", detached_header=True)
    out["flair.nhdr (+.raw)"] = folder / "flair.nhdr"
    s = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    s.SetDirection(lps.flatten().tolist())
    s.SetOrigin(origin.tolist())
    for name, compress in (("flair.mha", False), ("flair_z.mha", True), ("flair.mhd", False),
                           ("flair_z.mhd", True)):
        sitk.WriteImage(s, str(folder / name), compress)
        out[name] = folder / name
    sitk.WriteImage(s, str(folder / "flair_sitk.nrrd"), True)
    out["flair_sitk.nrrd (SimpleITK, gzip)"] = folder / "flair_sitk.nrrd"
    return out


def run(reader: str, path: Path, repeat: int) -> dict:
    best = None
    for _ in range(repeat):
        done = subprocess.run([sys.executable, "-c", CHILD, reader, str(path)],
                              capture_output=True, text=True, cwd=HERE.parent)
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1][:60]}
        r = json.loads(done.stdout)
        best = r if best is None or r["s"] < best["s"] else best
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_files(Path(tmp))
        ref = {gz: run("load_volume", files[name], args.repeat)
               for gz, name in ((False, "flair.nii"), (True, "flair.nii.gz"))}
        print(f"CPU: {cpu_model()}; {SOURCE.name} 240x240x155 float32; best of {args.repeat}; "
              "time and peak memory relative to load_volume on the .nii (uncompressed file) or "
              ".nii.gz (compressed file) of the same voxels")
        print(f"{'file':36s} {'reader':12s} {'s':>6s} {'x NIfTI':>8s} {'peak/voxels':>12s}")
        imp = run("import", files["flair.nii"], args.repeat)
        print(f"(once per process, at the first NRRD/MetaImage: importing SimpleITK + pynrrd "
              f"takes {imp['s']:.2f} s and {imp['peak'] / 2**20:.0f} MiB resident; not in the "
              "rows below)")
        for label, nbase in (("nii", False), ("nii.gz", True)):
            r = ref[nbase]
            print(f"{'flair.' + label:36s} {'load_volume':12s} {r['s']:6.3f} {1:8.2f} "
                  f"{r['peak'] / r['bytes']:12.2f}")
        readers = {"nrrd": ("load_volume", "SimpleITK", "itk", "pynrrd"),
                   "nhdr": ("load_volume", "SimpleITK", "itk", "pynrrd"),
                   "mha": ("load_volume", "SimpleITK", "itk"),
                   "mhd": ("load_volume", "SimpleITK", "itk"),
                   "mgz": ("load_volume", "nibabel", "SimpleITK"),
                   "hdr": ("load_volume", "nibabel", "SimpleITK")}
        for label, path in files.items():
            if label.startswith("flair.nii"):
                continue
            kind = path.name.split(".")[-1]
            compressed = "gz" in label or "_z" in label or kind == "mgz" or "SimpleITK" in label
            base = ref[compressed]
            for reader in readers[kind]:
                r = run(reader, path, args.repeat)
                if "error" in r:
                    print(f"{label:36s} {reader:12s} failed: {r['error']}")
                    continue
                print(f"{label:36s} {reader:12s} {r['s']:6.3f} {r['s'] / base['s']:8.2f} "
                      f"{r['peak'] / r['bytes']:12.2f}")


if __name__ == "__main__":
    main()
