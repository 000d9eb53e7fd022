"""NIfTI and path faults: wrong data is refused with words that say what is wrong, never shown.

Every fault is made in tmp_path from a real file of the data pack (a header field rewritten, a
byte flipped, a file cut short, a FIFO, ...) and checked twice: through the API
(``medsam_gui.io.load_volume``) and through the installed ``medsam-segment`` command, which
must exit 2 with one line naming the file, no traceback, and write nothing.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import os
import re
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medsam_gui.errors import MedsamError
from medsam_gui.io import list_series, load_volume
from conftest import ABDOMEN, PAT1, REPO

pytestmark = pytest.mark.needs_data
FLAIR = PAT1 / "Flair_subtrMeanDivStd.nii.gz"
CT = ABDOMEN / "example_ct_sm.nii.gz"
SEGMENT = Path(sys.executable).with_name("medsam-segment")
BOX = ["--box", "2", "70", "60", "60", "120", "120"]
SEVEN_GIB_SHAPE = (2000, 2000, 470)  # float32: 7.52e9 bytes, 7.0 GiB; under the 16 GiB limit


# -- helpers -------------------------------------------------------------------------------


def _refused(path, match, **kw) -> MedsamError:
    with pytest.raises(MedsamError, match=match) as info:
        load_volume(path, **kw)
    assert str(path) in str(info.value)
    return info.value


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli_env() -> dict:
    return dict(os.environ, MEDSAM_NO_PRELOAD="1", PYTHONDONTWRITEBYTECODE="1")


def _cli_refuses(path: Path, match: str, tmp_path: Path, preexec_fn=None) -> str:
    """medsam-segment on ``path``: exit 2, the file named, ``match`` said, no traceback, no
    output and no temp file; the input is unchanged. Returns stderr."""
    if not SEGMENT.is_file():
        pytest.skip("medsam-segment is not installed beside this Python")
    before = _digest(path) if path.is_file() else None
    out = tmp_path / "cli_out" / "labels.nii.gz"
    out.parent.mkdir(exist_ok=True)
    run = subprocess.run([str(SEGMENT), str(path), *BOX, "--out", str(out)], env=_cli_env(),
                         capture_output=True, text=True, timeout=600, cwd=REPO,
                         preexec_fn=preexec_fn)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr  # no library chatter
    assert str(path) in run.stderr
    assert re.search(match, run.stderr), run.stderr
    assert list(out.parent.iterdir()) == []  # neither the output nor a *.tmp-* file
    if before is not None:
        assert _digest(path) == before
    return run.stderr


def _plain_copy(tmp_path: Path, src: Path = FLAIR, name: str = "flair.nii") -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.decompress(src.read_bytes()))
    return path


def _patched(tmp_path: Path, name: str, edits, src: Path = FLAIR) -> Path:
    """A plain .nii of ``src`` with raw header bytes overwritten: ``edits`` is
    [(byte offset, struct format, value)] (little-endian, as the data pack's files are)."""
    raw = bytearray(gzip.decompress(src.read_bytes()))
    assert struct.unpack("<i", raw[:4])[0] == 348
    for offset, fmt, value in edits:
        struct.pack_into("<" + fmt, raw, offset, value)
    path = tmp_path / name
    path.write_bytes(bytes(raw))
    return path


def _with_shape(tmp_path: Path, name: str, shape, level: int = 6) -> Path:
    """The real FLAIR's header and voxels, with the header claiming ``shape``."""
    img = nib.load(str(FLAIR))
    hdr = img.header.copy()
    hdr.set_data_shape(shape)
    hdr.set_data_offset(352)
    voxels = gzip.decompress(FLAIR.read_bytes())[352:]
    path = tmp_path / name
    with open(path, "wb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level) if name.endswith(
            ".gz") else raw
        hdr.write_to(f)
        f.write(voxels)
        if f is not raw:
            f.close()
    return path


# -- 1. vox_offset inside the header; a file shorter than its header says --------------------


@pytest.mark.parametrize("offset", [0, 100, 348])
def test_vox_offset_inside_the_header_is_refused(tmp_path, offset):
    path = _patched(tmp_path, f"off{offset}.nii", [(108, "f", float(offset))])
    # what the fault was: nibabel reads such a file (offset 0: the header shown as voxels)
    if offset == 0:
        assert np.asanyarray(nib.load(str(path)).dataobj).shape == (240, 240, 155)
    err = _refused(path, f"vox_offset is {offset}, inside the header.*NIfTI-1.*"
                         r"vox_offset >= 352")
    assert "Traceback" not in str(err)
    _cli_refuses(path, r"vox_offset is \d+, inside the header", tmp_path)


def test_nifti2_vox_offset_inside_the_header(tmp_path):
    img = nib.load(str(CT))
    two = nib.Nifti2Image(np.asanyarray(img.dataobj), img.affine)
    path = tmp_path / "ct2.nii"
    nib.save(two, str(path))
    assert load_volume(path).shape == img.shape  # the intact NIfTI-2 opens
    raw = bytearray(path.read_bytes())
    struct.pack_into("<q", raw, 168, 540)
    path.write_bytes(bytes(raw))
    _refused(path, "vox_offset is 540, inside the header.*NIfTI-2.*vox_offset >= 544")


def test_truncated_plain_nifti_says_how_much_is_missing(tmp_path):
    path = _plain_copy(tmp_path)
    full = path.stat().st_size
    path.write_bytes(path.read_bytes()[:-12345])
    _refused(path, f"truncated: the header promises {full} bytes, the file has {full - 12345} "
                   r"\(12.1 KiB \(12345 bytes\) missing\)")
    _cli_refuses(path, "12345 bytes\\) missing", tmp_path)


# -- 2. the gzip CRC is checked: a flipped byte is refused --------------------------------


def _deflate_start(raw: bytes) -> int:
    """Where a gzip member's deflate data starts (after its optional header fields)."""
    flags, pos = raw[3], 10
    if flags & 4:  # FEXTRA
        pos += 2 + int.from_bytes(raw[pos: pos + 2], "little")
    for bit in (8, 16):  # FNAME, FCOMMENT: zero-terminated
        if flags & bit:
            pos = raw.index(b"\0", pos) + 1
    return pos + (2 if flags & 2 else 0)  # FHCRC


def _flip_a_byte_that_still_inflates(raw: bytes) -> bytes:
    """Flip one bit in the middle of the deflate data, at a place where raw inflate (no CRC)
    still gives the full length: the silently wrong image only the CRC can tell."""
    n_out = len(gzip.decompress(raw))
    for pos in range(len(raw) // 2, len(raw) // 2 + 200):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        d = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            body = d.decompress(bytes(bad[_deflate_start(raw):]))
        except zlib.error:
            continue
        if d.eof and len(body) == n_out:
            return bytes(bad)
    pytest.fail("no flipped byte in 200 that still inflates")


def test_flipped_byte_in_nii_gz_is_refused_by_its_crc(tmp_path):
    raw = FLAIR.read_bytes()
    assert 10 <= _deflate_start(raw) < 1000 < len(raw) // 2
    bad = _flip_a_byte_that_still_inflates(raw)
    path = tmp_path / "flipped.nii.gz"
    path.write_bytes(bad)
    with pytest.raises((OSError, zlib.error), match="CRC check failed"):
        gzip.decompress(bad)  # gzip itself knows
    # what the fault was: nibabel never reaches the CRC and shows changed voxels as right
    shown = np.asanyarray(nib.load(str(path)).dataobj)
    assert not np.array_equal(shown, np.asanyarray(nib.load(str(FLAIR)).dataobj))
    _refused(path, r"the compressed file is damaged \(CRC check failed\); its voxels cannot "
                   "be trusted")
    _cli_refuses(path, r"damaged \(CRC check failed\)", tmp_path)


def test_flipped_byte_in_a_4d_volume_not_shown_is_still_refused(tmp_path):
    img = nib.load(str(CT))
    vol = np.asanyarray(img.dataobj)
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([vol, vol + 1, vol + 2], axis=-1), img.affine), str(path))
    assert np.array_equal(load_volume(path).data, vol)  # intact: volume 0, with the note
    raw = bytearray(path.read_bytes())
    raw[len(raw) - len(raw) // 6] ^= 0x10  # in the last volume's data
    path.write_bytes(bytes(raw))
    _refused(path, "the compressed file is damaged")


def test_truncated_and_garbled_nii_gz(tmp_path):
    raw = CT.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) * 3 // 4])
    _refused(cut, "the compressed file is truncated: it ends before its end-of-stream marker, "
                  r"after \d+ decompressed bytes of the 739672 the header promises")
    _cli_refuses(cut, "compressed file is truncated", tmp_path)
    no_trailer = tmp_path / "no_trailer.nii.gz"
    no_trailer.write_bytes(raw[:-8])  # the stream ends, its CRC and length are gone
    _refused(no_trailer, "compressed file is truncated")
    garbled = bytearray(raw)
    garbled[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64
    (tmp_path / "garbled.nii.gz").write_bytes(bytes(garbled))
    _refused(tmp_path / "garbled.nii.gz", r"the compressed file is damaged \(")


def test_well_formed_gzip_variants_still_open(tmp_path):
    """Several gzip members, zero padding, bytes after the end: intact voxels open."""
    expected = np.asanyarray(nib.load(str(CT)).dataobj)
    data = gzip.decompress(CT.read_bytes())
    members = tmp_path / "members.nii.gz"
    members.write_bytes(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    padded = tmp_path / "padded.nii.gz"
    padded.write_bytes(CT.read_bytes() + b"\0" * 700)
    for path in (members, padded):
        vol = load_volume(path)
        assert np.array_equal(vol.data, expected) and vol.source.warnings == []
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(CT.read_bytes() + b"not gzip")
    vol = load_volume(junk)
    assert np.array_equal(vol.data, expected)
    assert any("after the end of the compressed data were ignored" in w
               for w in vol.source.warnings)


# -- 3. a header that claims 7 GiB is refused before anything that size is allocated -----


AS_LIMIT = 2 << 30
CHILD = """
import resource, sys
import numpy as np
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    np.empty(7 << 30, np.uint8)  # the control: an allocation of the claimed size fails here
    print("control: allocated")
except MemoryError:
    print("control: MemoryError")
try:
    load_volume(sys.argv[1])
    print("opened")
except MedsamError as exc:
    print("refused:", exc)
# this process's own peak (ru_maxrss would also count the pages of the parent it was forked
# from, which may be big)
with open("/proc/self/status") as status:
    print("maxrss_kib", [l.split()[1] for l in status if l.startswith("VmHWM:")][0])
"""


def _load_in_small_address_space(path: Path) -> str:
    run = subprocess.run([sys.executable, "-c", CHILD, str(path), str(AS_LIMIT)],
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "control: MemoryError" in run.stdout  # the limit would catch a big allocation
    return run.stdout


CLI_PARENT = """
import resource, subprocess, sys
run = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(run.stderr)
print(run.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def _cli_maxrss_kib(path: Path, tmp_path: Path) -> tuple:
    """(exit code, stderr, peak resident KiB) of medsam-segment on ``path``, started from a
    small parent: a child's peak counts the pages of the process it was forked from, and the
    test process itself may be big."""
    if not SEGMENT.is_file():
        pytest.skip("medsam-segment is not installed beside this Python")
    run = subprocess.run([sys.executable, "-c", CLI_PARENT, str(SEGMENT), str(path), *BOX,
                          "--out", str(tmp_path / "labels.nii.gz")], env=_cli_env(),
                         capture_output=True, text=True, timeout=600, cwd=REPO)
    code, rss = (int(v) for v in run.stdout.split())
    return code, run.stderr, rss


@pytest.mark.parametrize("name,level,match", [
    ("huge.nii", 6, r"the file is truncated: the header promises 7520000352 bytes, the file "
                    r"has 35712352 \(7.0 GiB"),
    ("huge.nii.gz", 6, r"header promises 7.0 GiB \(7520000000 bytes\) of voxels "
                       r"\(2000×2000×470 float32\), but a compressed file of .* can hold "
                       "at most"),
    # stored without compression, the file is big enough to hold 7 GiB in theory: the
    # stream is measured (and its CRC checked) without keeping it, then refused
    ("stored.nii.gz", 0, r"the file is truncated: the header promises 7520000352 bytes of "
                         r"header and voxels, the decompressed file holds 35712352"),
])
def test_seven_gib_header_refused_without_allocating_it(tmp_path, name, level, match):
    path = _with_shape(tmp_path, name, SEVEN_GIB_SHAPE, level)
    out = _load_in_small_address_space(path)
    assert f"refused: {path}: " in out, out
    assert re.search(match, out), out
    rss_kib = int(out.split("maxrss_kib")[1])
    assert rss_kib < 1 << 20, rss_kib  # under 1 GiB resident (7 GiB if it had been read)
    code, err, cli_rss = _cli_maxrss_kib(path, tmp_path)
    assert code == 2 and str(path) in err and "Traceback" not in err, err
    assert re.search(match, err), err
    assert cli_rss < 2 << 20, cli_rss  # the CLI has PyTorch loaded: under 2 GiB resident
    assert not (tmp_path / "labels.nii.gz").exists()


def test_genuine_volume_opens_in_the_same_small_address_space(tmp_path):
    """The limit of the test above leaves room for a real volume: it is the claim that is
    refused, not any read."""
    out = _load_in_small_address_space(FLAIR)
    assert "opened" in out, out


# -- 4. words that say what is wrong --------------------------------------------------------


def test_dim0_outside_1_to_7(tmp_path):
    path = _patched(tmp_path, "dim8.nii", [(40, "h", 8)])
    _refused(path, r"the header's dim\[0\] \(the number of dimensions\) is 8; NIfTI allows "
                   "1..7")
    _cli_refuses(path, r"dim\[0\] .* is 8; NIfTI allows 1..7", tmp_path)
    gz = tmp_path / "dim0.nii.gz"
    gz.write_bytes(gzip.compress(_patched(tmp_path, "dim0.nii", [(40, "h", 0)]).read_bytes()))
    _refused(gz, r"dim\[0\] \(the number of dimensions\) is 0")


def test_wrong_magic_and_split_pair_magic(tmp_path):
    path = _patched(tmp_path, "ni1.nii", [(344, "4s", b"ni1\0")])
    _refused(path, "magic 'ni1'.* separate .img file, but this is a single .nii file")
    path = _patched(tmp_path, "xyz.nii", [(344, "4s", b"xyz\0")])
    _refused(path, r"the header's magic is b'xyz\\x00', not b'n\+1\\x00'")


def test_header_cut_short(tmp_path):
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(gzip.decompress(CT.read_bytes())[:200]))
    _refused(path, r"ends inside its NIfTI-1 header \(200 of 352 bytes\)")


@pytest.mark.parametrize("shape,words", [((1, 1, 1), r"a single voxel \(shape \(1, 1, 1\)\)"),
                                         ((1, 64, 1), r"a 1D image \(a line of 64 voxels\)"),
                                         ((64, 1, 64), r"a 2D image")])
def test_too_few_dimensions_named(tmp_path, shape, words):
    img = nib.load(str(CT))
    data = np.asanyarray(img.dataobj)[: shape[0], : shape[1], : shape[2]]
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), img.affine), str(path))
    _refused(path, words + ".*medsam-gui opens 3D volumes")
    if shape == (1, 1, 1):
        _cli_refuses(path, "a single voxel", tmp_path)


def test_negative_dimension(tmp_path):
    path = _patched(tmp_path, "neg.nii", [(44, "h", -240)])  # dim[2]
    _refused(path, "negative dimension|corrupt")


def test_device_and_fifo_are_refused_without_reading(tmp_path):
    fifo = tmp_path / "scan.nii.gz"
    os.mkfifo(fifo)
    plain_fifo = tmp_path / "pipe"
    os.mkfifo(plain_fifo)
    # a reader of a FIFO with no writer blocks: these must return at once (an alarm ends
    # the test instead of hanging it if they do not)
    def hung(signum, frame):
        raise TimeoutError("load_volume blocked on a FIFO or device")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        for path, what in ((fifo, "FIFO"), (plain_fifo, "FIFO"),
                           (Path("/dev/zero"), "character device")):
            _refused(path, f"not a regular file or folder: this is a {what}")
            with pytest.raises(MedsamError, match="not a regular file"):
                list_series(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _cli_refuses(Path("/dev/zero"), "not a regular file or folder: this is a character "
                                    "device", tmp_path)
    _cli_refuses(fifo, r"this is a FIFO \(named pipe\)", tmp_path)


def test_4d_with_a_non_finite_volume(tmp_path):
    img = nib.load(str(FLAIR))
    vol = np.asanyarray(img.dataobj)
    path = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([np.full_like(vol, np.nan), vol], axis=-1), img.affine),
             str(path))
    _refused(path, r"8928000 of 8928000 voxels are not finite .*\(volume 0 of this 4D file "
                   "with 2 volumes\\)")
    good = load_volume(path, volume_index=1)  # the finite volume opens, with the note
    assert np.array_equal(good.data, vol)
    assert good.source.warnings == ["4D file with 2 volumes: showing volume 1"]
    plain = tmp_path / "four.nii"
    nib.save(nib.load(str(path)), str(plain))
    assert np.array_equal(load_volume(plain, volume_index=1).data, vol)
    _cli_refuses(path, r"volume 0 of this 4D file", tmp_path)


# -- unreadable files and folders (root reads them anyway: drop that override) -------------


def _drop_root_file_override() -> None:
    """In the child: lose CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so that file modes apply
    to root as to anyone (prctl PR_CAPBSET_DROP, then the exec applies the bounding set)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


API_CHILD = """
import sys
from medsam_gui.errors import MedsamError
from medsam_gui.io import load_volume
try:
    load_volume(sys.argv[1])
    print("opened")
except MedsamError as exc:
    print("refused:", exc)
"""


@pytest.fixture
def locked(tmp_path):
    folder = tmp_path / "locked_series"
    folder.mkdir()
    (folder / "0001.dcm").write_bytes(b"x")
    nii = tmp_path / "locked.nii.gz"
    nii.write_bytes(CT.read_bytes())
    folder.chmod(0)
    nii.chmod(0)
    try:
        probe = subprocess.run(["cat", str(nii)], preexec_fn=_drop_root_file_override,
                               capture_output=True)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot drop root's permission override here ({exc})")
    if probe.returncode == 0:
        pytest.skip("file modes do not apply to this user here (root with its override)")
    yield folder, nii
    folder.chmod(0o755)
    nii.chmod(0o644)


def test_unreadable_folder_and_file_say_permission_denied(locked, tmp_path):
    folder, nii = locked
    for path, words in ((folder, "permission denied: this folder cannot be listed"),
                        (nii, "permission denied: this file cannot be read")):
        run = subprocess.run([sys.executable, "-c", API_CHILD, str(path)], capture_output=True,
                             text=True, timeout=300, cwd=REPO,
                             preexec_fn=_drop_root_file_override)
        assert run.stdout.strip() == f"refused: {path}: {words}", run.stdout + run.stderr
        _cli_refuses(path, words, tmp_path, preexec_fn=_drop_root_file_override)
