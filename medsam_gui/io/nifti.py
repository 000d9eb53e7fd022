"""NIfTI volumes in: header checks first, then the voxels exactly as stored.

Voxels are the values ``np.asanyarray(img.dataobj)`` gives: the on-disk dtype when the header
has no scl_slope/scl_inter, the scaled values (as nibabel's ``get_fdata`` would give them) when
it has. Nothing is resampled or reoriented; the affine is nibabel's (sform, else qform, else the
pixdim fallback).

Before nibabel parses the header, the raw fields it cannot judge are checked (dim[0], vox_offset
inside the header, the magic). The voxels are read here (``verified_read``), not through
nibabel's proxy: a ``.nii.gz`` is decompressed to its end, so gzip's CRC and length are verified
(a flipped bit is refused, never shown), and no buffer is sized from the header's claim before
the file is known to hold that much.
"""

from __future__ import annotations

import gzip
import stat
import struct
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import nibabel as nib
import numpy as np
from nibabel.volumeutils import apply_read_scaling

from ..errors import MedsamError
from ..volume import SourceInfo, Volume
from .limits import DEFLATE_MAX_RATIO, check_array_size, size_text
from .verified_read import read_gzip_verified, read_plain
from .voxel_facts import guess_modality, non_finite_note

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# (NIfTI version, smallest vox_offset of a single .nii file: header + 4 extension-flag bytes)
HEADER_SIZES = {348: (1, 352), 540: (2, 544)}
MAGICS = {1: b"n+1\0", 2: b"n+2\0\r\n\x1a\n"}
# a NIfTI pair (or Analyze 7.5): the header in x.hdr, the voxels in x.img (either may be .gz)
PAIR_SUFFIXES = (".hdr", ".hdr.gz", ".img", ".img.gz")
PAIR_MAGICS = {1: b"ni1\0", 2: b"ni2\0\r\n\x1a\n"}


def is_nifti_path(path: Path) -> bool:
    """A single-file NIfTI or either file of a NIfTI / Analyze pair."""
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES + PAIR_SUFFIXES)


def is_pair_path(path: Path) -> bool:
    return path.name.lower().endswith(PAIR_SUFFIXES)


def pair_header_path(path: Path) -> Path:
    """The header of a pair, whichever of its two files was named."""
    name = path.name
    for img, hdr in ((".img.gz", ".hdr.gz"), (".img", ".hdr")):
        if name.lower().endswith(img):
            for candidate in (hdr, hdr.upper()):
                other = path.with_name(name[: -len(img)] + candidate)
                if other.exists():
                    return other
            raise MedsamError(f"this is the voxel file of a NIfTI/Analyze pair; its header "
                              f"{name[: -len(img)] + hdr} is not beside it", path)
    return path


def voxel_file(path: Path, img: "nib.Nifti1Pair") -> Path:
    """The file holding the voxels: ``path`` itself, or a pair's image file."""
    fm = img.file_map.get("image")
    name = getattr(fm, "filename", None)
    return Path(name) if name else path


def special_file_kind(mode: int) -> Optional[str]:
    """What a path is when it is neither a regular file nor a folder ("a FIFO", ...), else None.

    Such a path is refused before it is opened: reading a FIFO blocks, a device never ends.
    """
    for test, what in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "an unknown kind of file"
    return None


def _regular_size(path: Path) -> int:
    """The size of ``path``, refused unless it is a readable, non-empty regular file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MedsamError("no such file", path) from None
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    kind = special_file_kind(st.st_mode)
    if kind is not None:
        raise MedsamError(f"not a regular file: this is {kind}", path)
    if st.st_size == 0:
        raise MedsamError("the file is empty (0 bytes)", path)
    try:
        with open(path, "rb"):
            pass
    except PermissionError:
        raise MedsamError("permission denied: this file cannot be read", path) from None
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    return st.st_size


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _raw_header_bytes(path: Path) -> Tuple[bytes, bool]:
    """The first 544 bytes of the (decompressed) file, or fewer if it ends sooner; and
    whether the compressed stream broke before them."""
    opener = gzip.open if _is_gzip(path) else open
    got = b""
    try:
        with opener(path, "rb") as f:
            while len(got) < 544:
                part = f.read(544 - len(got))
                if not part:
                    break
                got += part
    except (OSError, EOFError, zlib.error):
        return got, True  # nibabel and the gzip hint word a garbled stream
    return got, False


def _check_raw_header(path: Path, pair: bool = False) -> None:
    """Refuse header fields nibabel would misread: dim[0] outside 1..7 (nibabel takes it as
    the other byte order and then reports a garbled data code), a vox_offset that points
    into the header (the header's bytes would be shown as voxels), a wrong magic. A pair's
    header (``pair``) has its own magic (or none: Analyze 7.5) and any vox_offset >= 0."""
    raw, broken = _raw_header_bytes(path)
    if len(raw) < 4:
        return
    for order in "<>":
        sizeof_hdr = struct.unpack(order + "i", raw[:4])[0]
        if sizeof_hdr in HEADER_SIZES:
            break
    else:
        return  # not a NIfTI header at all: nibabel's refusal and the gzip hint say so
    version, min_offset = HEADER_SIZES[sizeof_hdr]
    if pair:
        min_offset = sizeof_hdr
    if len(raw) < min_offset:
        if broken:
            return
        raise MedsamError(f"the file ends inside its NIfTI-{version} header ({len(raw)} of "
                          f"{min_offset} bytes)", path)
    if version == 1:
        ndim = struct.unpack(order + "h", raw[40:42])[0]
        offset: float = struct.unpack(order + "f", raw[108:112])[0]
        magic = raw[344:348]
    else:
        ndim = struct.unpack(order + "q", raw[16:24])[0]
        offset = struct.unpack(order + "q", raw[168:176])[0]
        magic = raw[4:12]
    if not 1 <= ndim <= 7:
        raise MedsamError(f"the header's dim[0] (the number of dimensions) is {ndim}; NIfTI "
                          "allows 1..7: the header is corrupt", path)
    if pair:
        if magic == MAGICS[version]:
            raise MedsamError(f"the header (magic {magic[:3]!r}) says the voxels follow it in "
                              "this file: this is a single-file NIfTI, name it .nii", path)
        if not offset >= 0:
            raise MedsamError(f"the header's vox_offset is {offset:g}: the header is corrupt",
                              path)
        return  # magic 'ni1'/'ni2', or none at all: Analyze 7.5
    if magic != MAGICS[version]:
        if version == 1 and magic == b"ni1\0":
            raise MedsamError("the header (magic 'ni1') says the voxels are in a separate .img "
                              "file, but this is a single .nii file", path)
        raise MedsamError(f"the header's magic is {magic!r}, not {MAGICS[version]!r} of a "
                          f"single-file NIfTI-{version}: the header is corrupt", path)
    if not offset >= min_offset:  # also NaN
        raise MedsamError(f"the header's vox_offset is {offset:g}, inside the header: in a "
                          f"single-file NIfTI-{version} the voxels start after its "
                          f"{min_offset}-byte header (vox_offset >= {min_offset}); the header "
                          "is corrupt", path)


def _gzip_hint(path: Path) -> str:
    """Name the common mix-up of a gzip file called .nii, or a plain file called .nii.gz."""
    is_gz = _is_gzip(path)
    named_gz = path.name.lower().endswith(".gz")
    if is_gz and not named_gz:
        return "; the file is gzip-compressed: rename it to .nii.gz"
    if named_gz and not is_gz:
        return "; the file is not gzip-compressed: rename it to .nii"
    return ""


def _open(path: Path) -> nib.Nifti1Image:
    """The header, through nibabel, after the checks on the file and the raw header; nothing
    of the voxels is read (the proxy is not used for them: see ``_read_voxels``)."""
    pair = is_pair_path(path)
    if pair:
        path = pair_header_path(path)
    _regular_size(path)
    _check_raw_header(path, pair)
    if pair:
        stem = path.name[: -len(".hdr.gz" if path.name.lower().endswith(".gz") else ".hdr")]
        images = [path.with_name(stem + e) for e in (".img", ".img.gz", ".IMG")]
        if not any(i.exists() for i in images):
            raise MedsamError(f"the voxel file {stem}.img of this NIfTI/Analyze header is not "
                              "beside it", path)
    try:
        # no memory map for .nii: the volume must not change if the file does; (.gz cannot
        # be mapped anyway, and nibabel's default path reads it faster)
        gz = path.name.lower().endswith(".gz")
        img = nib.load(str(path)) if gz else nib.load(str(path), mmap=False)
    except MemoryError:
        raise MedsamError("the header asks for more memory than is available", path) from None
    except nib.filebasedimages.ImageFileError:
        raise MedsamError("not a readable NIfTI file (no valid NIfTI header)" + _gzip_hint(path),
                          path) from None
    except Exception as exc:  # nibabel raises many types for garbage input
        raise MedsamError(f"not a readable NIfTI file ({type(exc).__name__}: {exc})"
                          + _gzip_hint(path), path) from None
    allowed = (nib.Nifti1Pair, nib.AnalyzeImage) if pair else (nib.Nifti1Image, nib.Nifti2Image)
    if not isinstance(img, allowed):
        raise MedsamError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    if pair:
        _regular_size(voxel_file(path, img))
    return img


def _spatial_shape(path: Path, shape: Tuple[int, ...]) -> Tuple[Tuple[int, int, int], int]:
    """(3D shape, number of volumes) after dropping trailing singleton dimensions."""
    dims = list(int(s) for s in shape)
    if any(s == 0 for s in dims):
        raise MedsamError(f"the header has a zero-size dimension (shape {tuple(dims)})", path)
    if any(s < 0 for s in dims):
        raise MedsamError(f"the header has a negative dimension (shape {tuple(dims)}): the "
                          "header is corrupt", path)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    spatial = [s for s in dims[:3] if s > 1]
    if len(spatial) < 3:
        what = {0: "a single voxel", 1: f"a 1D image (a line of {max(spatial or [1])} voxels)",
                2: "a 2D image"}[len(spatial)]
        raise MedsamError(f"{what} (shape {tuple(shape)}); medsam-gui opens 3D volumes", path)
    if len(dims) > 4:
        raise MedsamError(f"a {len(dims)}D image (shape {tuple(shape)}) is not supported", path)
    return (dims[0], dims[1], dims[2]), (dims[3] if len(dims) == 4 else 1)


def _data_bytes(img: nib.Nifti1Image, shape: Tuple[int, ...]) -> Tuple[int, int]:
    """(where the voxels start, how many bytes of voxels the header promises)."""
    hdr = img.header
    n = 1
    for s in shape:
        n *= int(s)
    # nibabel keeps the file's vox_offset in the proxy and resets the loaded header's to 0
    offset = getattr(img.dataobj, "offset", None)
    offset = int(hdr.get_data_offset() if offset is None else offset)
    return offset, n * hdr.get_data_dtype().itemsize


def _check_truncation(path: Path, img: nib.Nifti1Image, shape: Tuple[int, ...]) -> None:
    """Compare what the file can hold with what the header promises, before any buffer is
    sized from the header: the bytes of an uncompressed file; for a ``.nii.gz``, the most its
    compressed bytes can expand to (a header claiming gigabytes in a file of kilobytes)."""
    path = voxel_file(path, img)
    offset, nbytes = _data_bytes(img, shape)
    need = offset + nbytes
    have = path.stat().st_size
    if _is_gzip(path):
        most = have * DEFLATE_MAX_RATIO
        if need > most:
            dims = "×".join(str(int(s)) for s in shape)
            raise MedsamError(
                f"the header promises {size_text(nbytes)} of voxels ({dims} "
                f"{img.header.get_data_dtype()}), but a compressed file of {size_text(have)} "
                f"can hold at most {size_text(most)}: the header is corrupt or the file is "
                "truncated", path)
        return
    if have < need:
        raise MedsamError(
            f"the file is truncated: the header promises {need} bytes, the file has {have} "
            f"({size_text(need - have)} missing)", path)


def _read_voxels(path: Path, img: nib.Nifti1Image, n_volumes: int, index: int,
                 notes: Optional[List[str]] = None, slack: int = 0) -> np.ndarray:
    """Volume ``index`` of the file as a 3D array (scaled as nibabel scales, native byte
    order); a ``.nii.gz`` is decompressed to its end so its CRC is checked."""
    hdr = img.header
    full_shape = tuple(int(s) for s in hdr.get_data_shape())
    shape3, _ = _spatial_shape(path, full_shape)
    path = voxel_file(path, img)
    dtype = hdr.get_data_dtype()
    offset, total = _data_bytes(img, full_shape)
    nbytes = shape3[0] * shape3[1] * shape3[2] * dtype.itemsize
    start = offset + index * nbytes
    notes = [] if notes is None else notes
    try:
        if _is_gzip(path):
            raw = read_gzip_verified(path, offset + total, start, nbytes, notes, slack)
        else:
            raw = read_plain(path, offset + total, start, nbytes)
        data = raw.view(dtype).reshape(shape3, order="F")
        # nibabel moves scl_slope/inter from the header into the proxy on load
        slope = np.asanyarray(getattr(img.dataobj, "slope", 1.0))
        inter = np.asanyarray(getattr(img.dataobj, "inter", 0.0))
        data = apply_read_scaling(data, slope, inter)
    except MemoryError:
        raise MedsamError("not enough memory to read the voxels", path) from None
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))  # same values, native byte order
    return data


def header_shape_dtype(hdr, path: Path, kind: str) -> tuple:
    """(shape, voxel dtype) from a nibabel header; a header that cannot say is corrupt."""
    try:
        return tuple(int(s) for s in hdr.get_data_shape()), hdr.get_data_dtype()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for a bad header
        raise MedsamError(f"corrupt {kind} header ({exc})", path) from None


def load_nifti(path: Path, volume_index: Optional[int] = None) -> Volume:
    """Load a 3D NIfTI file, or one volume of a 4D file (``volume_index``, default the first)."""
    img = _open(path)
    hdr = img.header
    full_shape, dtype = header_shape_dtype(hdr, path, "NIfTI")
    shape3, n_volumes = _spatial_shape(path, full_shape)
    if dtype.kind not in "biuf" or dtype.names:
        raise MedsamError(f"voxel type {dtype} (e.g. RGB or complex) is not supported", path)
    # nibabel moves scl_slope/inter from the header into the proxy on load
    scaled = getattr(img.dataobj, "slope", 1.0) != 1.0 or getattr(img.dataobj, "inter", 0.0) != 0.0
    itemsize = 8 if scaled else max(1, dtype.itemsize)
    check_array_size(shape3, itemsize, path)
    _check_truncation(path, img, full_shape)

    index, warnings = choose_volume(n_volumes, volume_index, path)

    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise MedsamError("the header's affine (sform/qform) is not a valid transform", path)

    analyze = not isinstance(img, nib.Nifti1Pair)
    if analyze:
        warnings.append("an Analyze 7.5 header (no NIfTI magic) states no orientation: taken "
                        "as nibabel does (left on the image's left, radiological), so view "
                        "labels (R/L, A/P, S/I) may be wrong")
    elif int(hdr["sform_code"]) == 0 and int(hdr["qform_code"]) == 0:
        warnings.append("the header has no sform or qform: patient orientation is unknown, "
                        "so view labels (R/L, A/P, S/I) may be wrong")
    data = _read_voxels(path, img, n_volumes, index, warnings)
    note = non_finite_note(data, path, f" (volume {index} of this 4D file with {n_volumes} "
                           "volumes)" if n_volumes > 1 else "")
    if note:
        warnings.append(note)

    descrip = hdr["descrip"].tobytes().split(b"\0", 1)[0].decode("latin-1").strip()
    source = SourceInfo(
        path=str(pair_header_path(path) if is_pair_path(path) else path),
        kind="nifti",
        description=descrip or path.name,
        warnings=warnings,
        nifti_header=None if analyze else hdr.copy(),
        extra={"volume_index": index, "n_volumes": n_volumes},
    )
    return Volume(data, affine, modality=guess_modality(data), source=source)


def choose_volume(n_volumes: int, volume_index: Optional[int], path: Path
                  ) -> Tuple[int, List[str]]:
    """The volume to show of a file holding ``n_volumes`` (default the first, said so)."""
    warnings: List[str] = []
    index = 0
    if n_volumes > 1:
        if volume_index is None:
            warnings.append(
                f"4D file with {n_volumes} volumes: showing volume 0 (the first); "
                "choose another with volume_index"
            )
        else:
            index = int(volume_index)
            if not 0 <= index < n_volumes:
                raise MedsamError(
                    f"volume index {index} is outside 0..{n_volumes - 1} of this 4D file", path
                )
            warnings.append(f"4D file with {n_volumes} volumes: showing volume {index}")
    elif volume_index not in (None, 0):
        raise MedsamError(f"volume index {volume_index} requested but the file is 3D", path)
    return index, warnings
