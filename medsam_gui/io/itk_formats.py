"""NRRD (.nrrd, .nhdr + data) and MetaImage (.mha, .mhd + .raw/.zraw) volumes in, through
SimpleITK, and label maps out in the same families.

SimpleITK (ITK's NRRD and MetaIO readers, as Slicer and ITK-SNAP use) reads the header first
(``ReadImageInformation``): dimensions, voxel type and the files are checked before any voxel
buffer exists, so a header that claims gigabytes in a file of kilobytes costs no memory. ITK
works in LPS; a NRRD in ``right-anterior-superior`` space is converted by the reader, and the
affine here is RAS+ like nibabel's: ``diag(-1,-1,1) @ [direction * spacing | origin]``.
Voxels are as stored (no rescale: NRRD and MetaImage have none), in the file's index order
(x fastest), so ``volume.data[i, j, k]`` is the voxel the header places at index (i, j, k).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zlib
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .limits import DEFLATE_MAX_RATIO, check_array_size
from .limits import size_text as _size_text
from .nifti import _regular_size, _spatial_shape, choose_volume
from .verified_read import CHUNK, inflate_error
from .voxel_facts import guess_modality, non_finite_note

PathArg = Union[str, "os.PathLike[str]"]
NRRD_SUFFIXES = (".nrrd", ".nhdr")
META_SUFFIXES = (".mha", ".mhd")
ITK_SUFFIXES = NRRD_SUFFIXES + META_SUFFIXES
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
FAMILY = {"nrrd": "NRRD", "metaimage": "MetaImage"}


def is_itk_path(path: Path) -> bool:
    return path.name.lower().endswith(ITK_SUFFIXES)


def is_slicer_seg_path(path: Path) -> bool:
    return path.name.lower().endswith(".seg.nrrd")


def family_of(path: Path) -> str:
    """"nrrd" or "metaimage" from the file name."""
    return "nrrd" if path.name.lower().endswith(NRRD_SUFFIXES) else "metaimage"


def _sitk():
    import SimpleITK as sitk  # imported on first use: it takes a moment

    return sitk


def _reason(exc: Exception) -> str:
    """The useful line of an ITK exception (they carry file/line noise)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if "Description:" in ln:
            return ln.split("Description:", 1)[1].strip()
    for ln in reversed(lines):
        if not ln.startswith(("sitk::ERROR", "itk::ERROR")) or ":" in ln:
            return re.sub(r"^(sitk|itk)::ERROR:\s*", "", ln)[:300]
    return text[:300]


def _itemsize(pixel: str, path: Path) -> int:
    """Bytes per component of a SimpleITK pixel type ("32-bit float", "vector of 16-bit ...")."""
    if "complex" in pixel or "label" in pixel:
        raise MedsamError(f"voxel type {pixel} is not supported", path)
    m = re.search(r"(\d+)-bit", pixel)
    if not m:
        raise MedsamError(f"voxel type {pixel} is not supported", path)
    return int(m.group(1)) // 8


def _data_files(path: Path, family: str) -> Tuple[List[Path], str]:
    """(files holding the voxels, encoding) as the header names them; ([], "") when the header
    names them in a way this check does not follow (file lists, patterns): ITK then judges."""
    if family == "nrrd":
        import nrrd

        try:
            header = nrrd.read_header(str(path))
        except Exception as exc:  # pynrrd raises NRRDError and friends for a bad header
            raise MedsamError(f"not a readable NRRD file ({exc})", path) from None
        encoding = str(header.get("encoding", "raw")).lower()
        encoding = {"txt": "ascii", "text": "ascii", "gz": "gzip", "bz2": "bzip2"}.get(
            encoding, encoding)
        detached = header.get("data file") or header.get("datafile")
        if detached is None:
            return [path], encoding
        if isinstance(detached, str) and " " not in detached.strip():
            p = Path(detached)
            return [p if p.is_absolute() else path.parent / p], encoding
        return [], encoding
    fields = {}
    try:
        with open(path, "rb") as f:
            for _ in range(200):  # MetaIO: "Key = value" lines; ElementDataFile comes last
                line = f.readline(4096).decode("latin-1").strip()
                if "=" in line:
                    key, value = (s.strip() for s in line.split("=", 1))
                    fields[key.lower()] = value
                if not line or line.lower().startswith("elementdatafile"):
                    break
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    encoding = "gzip" if fields.get("compresseddata", "false").lower() == "true" else "raw"
    name = fields.get("elementdatafile", "")
    if name.upper() == "LOCAL":
        return [path], encoding
    if name and " " not in name and "%" not in name and name.upper() != "LIST":
        p = Path(name)
        return [p if p.is_absolute() else path.parent / p], encoding
    return [], encoding


def _line_skip(path: Path, family: str) -> int:
    if family != "nrrd":
        return 0
    import nrrd

    try:
        return int(nrrd.read_header(str(path)).get("line skip", 0) or 0)
    except Exception:
        return 0


def _check_files(path: Path, family: str, nbytes: int, shape_text: str) -> None:
    """The voxel file(s) exist and can hold what the header promises (before allocation), and
    compressed data passes its checksum (``verify_deflate``)."""
    files, encoding = _data_files(path, family)
    for f in files:
        if f != path and not f.is_file():
            raise MedsamError(f"the voxel file {f.name} that this header names is not beside "
                              "it", path)
        if f != path:
            _regular_size(f)
    if not files or encoding not in ("raw", "gzip", "zlib"):
        return
    have = sum(f.stat().st_size for f in files)
    if encoding in ("gzip", "zlib"):
        if have * DEFLATE_MAX_RATIO < nbytes:
            raise MedsamError(f"the header promises {_size_text(nbytes)} of voxels ({shape_text}),"
                              f" but compressed data of {_size_text(have)} can hold at most "
                              f"{_size_text(have * DEFLATE_MAX_RATIO)}: the header is corrupt "
                              "or the file is truncated", files[0])
        for f in files:
            start = _attached_start(path, family, _line_skip(path, family)) if f == path else 0
            verify_deflate(f, start, f)
    elif have < nbytes:
        raise MedsamError(f"the file is truncated: the header promises {_size_text(nbytes)} of "
                          f"voxels ({shape_text}), the file has {_size_text(have)}", files[0])


def _attached_start(path: Path, family: str, line_skip: int = 0) -> int:
    """Where the data of a single-file NRRD / MetaImage begins: after the NRRD header's blank
    line (and ``line skip`` lines), or after MetaImage's ``ElementDataFile = LOCAL`` line."""
    with open(path, "rb") as f:
        for _ in range(10000):
            line = f.readline(1 << 16)
            if not line:
                break
            text = line.strip()
            if family == "nrrd" and not text:
                break
            if family != "nrrd" and text.lower().startswith(b"elementdatafile"):
                break
        for _ in range(line_skip):
            f.readline()
        return f.tell()


def verify_deflate(path: Path, start: int, shown: Path) -> None:
    """Decompress a gzip / zlib stream from byte ``start`` to its end, output discarded, so
    its CRC-32 / Adler-32 and length are checked: ITK stops reading at the last voxel, before
    the checksum, and a flipped bit could otherwise be shown as an image."""
    pos = 0
    try:
        with open(path, "rb") as f:
            f.seek(start)
            member = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header
            while True:
                chunk = member.unconsumed_tail or f.read(CHUNK)
                if not chunk:
                    break
                pos += len(member.decompress(chunk, CHUNK))
                if member.eof:
                    rest = member.unused_data.lstrip(b"\0")
                    if not rest[:2] == b"\x1f\x8b":
                        return
                    member = zlib.decompressobj(32 + zlib.MAX_WBITS)
                    pos += len(member.decompress(rest, CHUNK))
    except zlib.error as exc:
        raise inflate_error(shown, exc) from None
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", shown) from None
    if not member.eof:
        raise MedsamError(f"the compressed data is truncated: it ends before its end-of-stream "
                          f"marker, after {pos} decompressed bytes", shown)


def itk_affine(image) -> np.ndarray:
    """RAS+ affine of a SimpleITK image's first three axes."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    spacing = np.array(image.GetSpacing(), dtype=np.float64)[:3]
    origin = np.array(image.GetOrigin(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ origin
    return affine


def read_itk_header(path: Path):
    """A SimpleITK reader with the header read (no voxels) and the file checks done."""
    sitk = _sitk()
    family = family_of(path)
    _regular_size(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("NrrdImageIO" if family == "nrrd" else "MetaImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise MedsamError(f"not a readable {FAMILY[family]} file ({_reason(exc)})",
                          path) from None
    return reader


def _read_image(reader, path: Path):
    try:
        return reader.Execute()
    except MemoryError:
        raise MedsamError("not enough memory to read the voxels", path) from None
    except RuntimeError as exc:
        raise MedsamError(f"the voxels cannot be read ({_reason(exc)}): the file is damaged or "
                          "truncated", path) from None


def load_itk(path: Path, volume_index: Optional[int] = None) -> Volume:
    """A NRRD or MetaImage volume (one volume of a 4D or multi-component file, default the
    first) on the grid its header states."""
    sitk = _sitk()
    family = family_of(path)
    if is_slicer_seg_path(path):
        raise MedsamError("this is a 3D Slicer segmentation, not a scan; open its scan and "
                          "import the segmentation with File ▸ Import segmentation…", path)
    reader = read_itk_header(path)
    pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    itemsize = _itemsize(pixel, path)
    size = tuple(int(s) for s in reader.GetSize())
    ncomp = int(reader.GetNumberOfComponents())
    kinds = " ".join(reader.GetMetaData(k) for k in reader.GetMetaDataKeys()
                     if k.startswith("NRRD_kinds"))
    if "color" in kinds.lower():
        raise MedsamError(f"a colour image ({pixel}, NRRD kinds {kinds}); medsam-gui opens "
                          "grey-value volumes", path)
    full = size + ((ncomp,) if ncomp > 1 else ())
    shape3, n_volumes = _spatial_shape(path, full)
    n_all = int(np.prod([int(s) for s in full], dtype=np.float64))
    shape_text = "×".join(str(s) for s in full) + f" {pixel}"
    check_array_size(full, itemsize * 2, path)  # ITK's buffer, then numpy's copy
    _check_files(path, family, n_all * itemsize, shape_text)
    index, warnings = choose_volume(n_volumes, volume_index, path)

    image = _read_image(reader, path)
    affine = itk_affine(image)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("the header's space directions / origin are not a valid transform",
                          path)
    try:
        arr = sitk.GetArrayFromImage(image)  # (t, z, y, x) or (z, y, x[, c])
    except MemoryError:
        raise MedsamError("not enough memory to read the voxels", path) from None
    del image
    if ncomp > 1:
        arr = arr[..., index]
    elif arr.ndim == 4:
        arr = arr[index]
    data = arr.reshape(shape3[::-1]).transpose(2, 1, 0)
    if data.base is not None and n_volumes > 1:
        data = data.copy(order="F")  # do not keep the other volumes alive
    del arr
    note = non_finite_note(data, path, f" (volume {index} of this file with {n_volumes} "
                           "volumes)" if n_volumes > 1 else "")
    if note:
        warnings.append(note)
    meta = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    space = meta.get("NRRD_space", "")
    source = SourceInfo(
        path=str(path),
        kind=family,
        description=path.name,
        warnings=warnings,
        extra={"volume_index": index, "n_volumes": n_volumes, "itk_pixel": pixel,
               "nrrd_space": space},
    )
    return Volume(data, affine, modality=guess_modality(data), source=source)


# ---------------------------------------------------------------------------------------------
# label maps out: NRRD (pynrrd, exact space directions) and MetaImage (SimpleITK), verified

LABEL_SUFFIXES = {"nrrd": (".nrrd",), "metaimage": (".mha",)}


def lps_geometry(affine: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix whose columns are the LPS steps of the voxel axes, LPS origin)."""
    return LPS_TO_RAS @ affine[:3, :3], LPS_TO_RAS @ affine[:3, 3]


def nrrd_header(arr: np.ndarray, affine: np.ndarray) -> dict:
    """pynrrd header of a 3D label array on ``affine``'s grid, in LPS as Slicer writes it."""
    steps, origin = lps_geometry(affine)
    return {"type": "unsigned char" if arr.dtype == np.uint8 else "unsigned short",
            "dimension": 3, "space": "left-posterior-superior",
            "space directions": steps.T.copy(), "kinds": ["domain"] * 3, "endian": "little",
            "encoding": "gzip", "space origin": origin.copy()}


@contextlib.contextmanager
def staged_file(path: Path):
    """A path with ``path``'s own name inside a temporary folder beside it (writers choose
    their format by the extension); renamed onto ``path`` on success, removed on failure."""
    from .atomic import fsync_dir, temp_path_for

    stage = temp_path_for(path)
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir()
    except OSError as exc:
        raise MedsamError(f"cannot write in the folder {path.parent} ({exc.strerror or exc})",
                          path) from None
    try:
        yield stage / path.name
        os.replace(stage / path.name, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise MedsamError(f"cannot write the label map ({exc.strerror or exc})", path) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def verify_written(written: Path, arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Re-read ``written`` through the reader that opens volumes and compare grid and voxels."""
    from .labels import AFFINE_TOLERANCE_MM

    sitk = _sitk()
    try:
        back = sitk.ReadImage(str(written))
        data = sitk.GetArrayFromImage(back).transpose(2, 1, 0)
    except RuntimeError as exc:
        raise MedsamError(f"written label map cannot be read back ({_reason(exc)})",
                          path) from None
    problems = []
    if data.shape != arr.shape:
        problems.append(f"shape {data.shape} != {arr.shape}")
    elif not np.array_equal(data, arr):
        problems.append("voxels differ")
    if not np.allclose(itk_affine(back), affine, atol=AFFINE_TOLERANCE_MM):
        problems.append("grid (space directions / origin) differs")
    if problems:
        raise MedsamError("label map failed verification: " + ", ".join(problems), path)


def save_itk_label_map(labels: np.ndarray, volume: Volume, path: PathArg,
                       family: Optional[str] = None) -> Path:
    """Write ``labels`` (on ``volume``'s grid) as a NRRD (``.nrrd``) or MetaImage (``.mha``)
    label map, uint8 or uint16, gzip-compressed; verified by re-reading before it is put in
    place (nothing is left behind on failure)."""
    from .atomic import check_target
    from .labels import label_array

    path = Path(os.fspath(path)).expanduser()
    family = family or family_of(path)
    if not path.name.lower().endswith(LABEL_SUFFIXES[family]):
        raise MedsamError(f"a {FAMILY[family]} label map is saved as "
                          f"{' or '.join(LABEL_SUFFIXES[family])}", path)
    check_target(path, f"a file name ending in {LABEL_SUFFIXES[family][0]}")
    arr = label_array(labels, volume, path)
    affine = np.asarray(volume.affine, dtype=np.float64)
    with staged_file(path) as tmp:
        if family == "nrrd":
            import nrrd

            nrrd.write(str(tmp), arr, nrrd_header(arr, affine), index_order="F",
                       compression_level=1)
        else:
            sitk = _sitk()
            steps, origin = lps_geometry(affine)
            spacing = np.sqrt((steps ** 2).sum(axis=0))
            image = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(2, 1, 0)))
            image.SetSpacing([float(s) for s in spacing])
            image.SetOrigin([float(o) for o in origin])
            image.SetDirection([float(d) for d in (steps / spacing).flatten()])
            try:
                sitk.WriteImage(image, str(tmp), True)
            except RuntimeError as exc:
                raise MedsamError(f"cannot write the label map ({_reason(exc)})", path) from None
        verify_written(tmp, arr, affine, path)
    return path
