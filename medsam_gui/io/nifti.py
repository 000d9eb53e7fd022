"""NIfTI volumes in: header checks first, then the voxels exactly as stored.

Voxels are the values ``np.asanyarray(img.dataobj)`` gives: the on-disk dtype when the header
has no scl_slope/scl_inter, the scaled values (as nibabel's ``get_fdata`` would give them) when
it has. Nothing is resampled or reoriented; the affine is nibabel's (sform, else qform, else the
pixdim fallback).

Before nibabel parses the header, the raw fields it cannot judge are checked (dim[0], vox_offset
inside the header, the magic). The voxels are read here, not through nibabel's proxy: a
``.nii.gz`` is decompressed to its end, so gzip's CRC and length are verified (a flipped bit is
refused, never shown), and no buffer is sized from the header's claim before the file is known
to hold that much.
"""

from __future__ import annotations

import gzip
import os
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
from .limits import DEFLATE_MAX_RATIO, check_array_size, size_text, tick

NIFTI_SUFFIXES = (".nii", ".nii.gz")
CHUNK = 1 << 20
PLAIN_CHUNK = 8 << 20  # an uncompressed file is read this much at a time (progress, cancel)
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


def non_finite_note(data: np.ndarray, path: Path, context: str = "") -> Optional[str]:
    """What the open message says about NaN/infinite voxels (count, kinds, where), or None.

    Such voxels are kept as they are (the voxels are never changed): the display shows NaN
    and -inf black, like the background, and +inf white; the model input maps them the same
    way (``engine.intensity``), and statistics leave them out. Only a volume with no finite
    voxel at all is refused: there is nothing to show.
    """
    if not np.issubdtype(data.dtype, np.floating):
        return None
    finite = np.isfinite(data)
    bad = int(data.size - np.count_nonzero(finite))
    if not bad:
        return None
    if bad == data.size:
        raise MedsamError(f"{bad} of {data.size} voxels are not finite (NaN or infinity): "
                          f"there is nothing to show{context}", path)
    n_nan = int(np.count_nonzero(np.isnan(data)))
    n_pos = int(np.count_nonzero(data == np.inf))
    kinds = ", ".join(f"{n} {what}" for n, what in
                      ((n_nan, "NaN"), (n_pos, "+inf"), (bad - n_nan - n_pos, "-inf")) if n)
    where = []
    for axis, letter in enumerate("ijk"):
        hit = np.flatnonzero(~finite.all(axis=tuple(a for a in range(3) if a != axis)))
        where.append(f"{letter} {hit[0]}..{hit[-1]}")
    return (f"{bad} of {data.size} voxels ({100.0 * bad / data.size:.1f}%) are not finite "
            f"({kinds}), within voxels {', '.join(where)}{context}: NaN and -inf are shown "
            "black like the background and given to the model as its darkest value, +inf "
            "as its brightest")


def ensure_finite(data: np.ndarray, path: Path) -> None:
    """Refuse a volume with no finite voxel; partly non-finite volumes open (see
    ``non_finite_note``)."""
    non_finite_note(data, path)


def guess_modality(data: np.ndarray) -> str:
    """Guess "CT" or "MR" for a NIfTI volume, which has no modality field.

    CT is stored in Hounsfield units: integer values, air at about -1000 and nearly everything
    between air and dense bone/contrast. So: integer-valued data (checked on a sample), minimum
    <= -500, and at least 60% of voxels within -1100..3100 (60%, not more, because scanners pad
    outside the field of view with -2048 or -3024). A CT stored without its rescale (raw
    unsigned values, HU + 1024) is recognised by its two peaks: air (HU + 1024 below 224) and
    soft tissue (874..1324) hold >= 85% of the voxels together with bone, soft tissue >= 25%,
    and the band between lung and fat (574..874) < 5% (on the CT in ../shared/data: 95%/32%/1%
    and 94%/61%/3%; on raw MR: soft tissue <= 3%). Anything else (non-negative MR, z-scored or
    8-bit templates, phase images spread over -4096..4096) is "MR". Model ▸ Modality overrides.
    """
    if data.size == 0:
        return "MR"
    flat = np.ravel(data, order="K")
    sample = flat[:: max(1, flat.size // 200_000)]
    lowest = None
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]  # NaN/inf voxels say nothing about the modality
        if sample.size == 0 or not np.array_equal(sample, np.round(sample)):
            return "MR"
        lowest = float(np.min(data, where=np.isfinite(data), initial=np.inf))
    if (float(data.min()) if lowest is None else lowest) > -500:
        return "CT" if _looks_like_unrescaled_ct(sample) else "MR"
    inside = np.count_nonzero((sample >= -1100) & (sample <= 3100))
    return "CT" if inside >= 0.6 * sample.size else "MR"


def _looks_like_unrescaled_ct(sample: np.ndarray) -> bool:
    s = sample.astype(np.float64)
    n = float(s.size)
    air = np.count_nonzero((s >= -200) & (s < 224)) / n
    gap = np.count_nonzero((s >= 574) & (s < 874)) / n
    soft = np.count_nonzero((s >= 874) & (s < 1324)) / n
    bone = np.count_nonzero((s >= 1324) & (s < 4096)) / n
    return soft >= 0.25 and gap < 0.05 and air + soft + bone >= 0.85


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


def _short_stream(path: Path, have: int, need: int) -> MedsamError:
    return MedsamError(f"the file is truncated: the header promises {need} bytes of header and "
                       f"voxels, the decompressed file holds {have} ({size_text(need - have)} "
                       "missing)", path)


def _inflate_error(path: Path, exc: zlib.error) -> MedsamError:
    text = str(exc)
    what = ("CRC check failed" if "incorrect data check" in text else
            "length check failed" if "incorrect length check" in text else
            f"invalid compressed data: {text.split(': ', 1)[-1]}")
    return MedsamError(f"the compressed file is damaged ({what}); its voxels cannot be trusted "
                       "and are not shown", path)


def _stream_gzip(path: Path, need: int, out: Optional[np.ndarray], start: int,
                 notes: List[str]) -> int:
    """Decompress the whole ``.nii.gz``, every gzip member to its end, so zlib verifies each
    member's CRC and length; copy bytes ``start..start+len(out)`` into ``out``; return the
    decompressed length. Zero padding after the last member is allowed (gzip allows it)."""
    pos = 0
    view = memoryview(out) if out is not None else None
    end = start + len(out) if out is not None else 0

    def keep(piece: bytes) -> None:
        nonlocal pos
        a, b = max(pos, start), min(pos + len(piece), end)
        if view is not None and a < b:
            view[a - start: b - start] = memoryview(piece)[a - pos: b - pos]
        pos += len(piece)
        tick(min(pos, need), need, path)  # the caller's progress; stops here on its cancel

    member: Optional["zlib._Decompress"] = zlib.decompressobj(16 + zlib.MAX_WBITS)
    pending = b""
    try:
        with open(path, "rb") as f:
            while True:
                if not pending:
                    pending = f.read(CHUNK)
                    if not pending:
                        break
                if member is None:  # between members: zero padding, another member or junk
                    pending = pending.lstrip(b"\0")
                    if not pending:
                        continue
                    if pending[:1] != b"\x1f":
                        notes.append(f"bytes after the end of the compressed data were "
                                     f"ignored (the {pos} bytes before them passed gzip's "
                                     "CRC check)")
                        return pos
                    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
                keep(member.decompress(pending, CHUNK))
                pending = member.unconsumed_tail
                if member.eof:
                    pending, member = member.unused_data, None
            if member is not None:
                keep(member.flush())
    except zlib.error as exc:
        raise _inflate_error(path, exc) from None
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if member is not None and not member.eof:
        raise MedsamError(f"the compressed file is truncated: it ends before its end-of-stream "
                          f"marker, after {pos} decompressed bytes of the {need} the header "
                          "promises", path)
    return pos


def _read_gzip(path: Path, need: int, start: int, nbytes: int, notes: List[str],
               slack: int = 0) -> np.ndarray:
    """``nbytes`` decompressed bytes from ``start``, after the whole stream is verified.

    The buffer is sized from the header only when gzip's trailer (the length mod 2**32)
    agrees with it; otherwise the stream is first decompressed without keeping it, so a header
    that lies costs no memory, and a damaged or short stream is refused before any buffer."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        isize = int.from_bytes(f.read(4), "little")
    if not 0 <= (isize - need) % (1 << 32) <= slack:  # slack: a format's footer (MGH)
        length = _stream_gzip(path, need, None, 0, notes)
        if length < need:
            raise _short_stream(path, length, need)
    out = np.empty(nbytes, np.uint8)
    length = _stream_gzip(path, need, out, start, notes)
    if length < need:
        raise _short_stream(path, length, need)
    return out


def _read_plain(path: Path, need: int, start: int, nbytes: int) -> np.ndarray:
    out = np.empty(nbytes, np.uint8)
    view = memoryview(out)
    got = 0
    tick(0, nbytes, path)
    try:
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            while got < nbytes:
                n = f.readinto(view[got: got + PLAIN_CHUNK])
                if not n:
                    break
                got += n
                tick(got, nbytes, path)  # the caller's progress; stops here on its cancel
    except OSError as exc:
        raise MedsamError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if got < nbytes:  # shrank since it was checked
        raise MedsamError(f"the file is truncated: the header promises {need} bytes, the file "
                          f"ends after {start + got}", path)
    return out


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
            raw = _read_gzip(path, offset + total, start, nbytes, notes, slack)
        else:
            raw = _read_plain(path, offset + total, start, nbytes)
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
