"""File formats: which ones are read and written, paths and extensions, ITK's error messages, and the
byte-level checks that name what is wrong with a NIfTI or MetaImage file before ITK fails on it
(truncated data, a missing data file, a header that does not add up)."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path


READ_FORMATS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha")

_READ_HINT = (
    "pass a 3D CT as " + ", ".join(READ_FORMATS) + " or a folder holding one DICOM series"
)


# ----------------------------------------------------------------------------------------------- paths


def _path(path: str | os.PathLike) -> Path:
    return Path(os.fspath(path)).expanduser()


def _extension(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when a and b name the same file (resolved paths equal, or the same inode when both exist)."""
    pa, pb = _path(a), _path(b)
    if pa.exists() and pb.exists():
        return os.path.samefile(pa, pb)
    return pa.resolve() == pb.resolve()


def _itk_reason(error: RuntimeError, path: Path | None = None) -> str:
    """The useful part of a SimpleITK exception: drop the C++ source location and object addresses."""
    lines = []
    for line in str(error).splitlines()[1:]:
        line = line.strip()
        for prefix in ("sitk::ERROR:", "ITK ERROR:"):
            if line.startswith(prefix):
                line = line[len(prefix):].strip()
                if prefix == "ITK ERROR:" and "): " in line:
                    line = line.split("): ", 1)[1]
        # MetaIO appends a stale errno ("No such file or directory") even when the file exists.
        if line == "Reason: No such file or directory" and path is not None and path.exists():
            continue
        if line:
            lines.append(line)
    # ITK's last line is the specific cause; earlier ones are the call chain.
    return lines[-1] if lines else str(error).strip()


def _nifti_shortfall(path: Path) -> str | None:
    """Why a NIfTI file holds fewer voxel bytes than its header declares, or None.

    ITK's NIfTI reader zero-fills a truncated .nii or .nii.gz without any error, so we check ourselves.
    """
    compressed = _extension(path) == ".nii.gz"
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            expected = _nifti_expected_bytes(f.read(540))
            if expected is None:
                return None
            if not compressed:
                total = path.stat().st_size
            elif _gzip_trailer_size(path) == expected % 2**32:
                return None  # a cut-off stream ends in this exact size with odds of 2**-32
            else:
                # Multi-member gzip (bgzip) or a real shortfall: count the whole stream to be sure.
                f.seek(0)
                total = 0
                while chunk := f.read(1 << 22):
                    total += len(chunk)
    except (OSError, EOFError, zlib.error) as error:
        return f"its compressed data is truncated or corrupt ({error})"
    if total < expected:
        return f"it is truncated: {total} bytes where its header declares {expected}"
    return None


def _gzip_trailer_size(path: Path) -> int:
    """ISIZE, the last four bytes of a gzip member: the uncompressed size modulo 2**32."""
    with open(path, "rb") as f:
        f.seek(-4, os.SEEK_END)
        return struct.unpack("<I", f.read(4))[0]


def _nifti_expected_bytes(header: bytes) -> int | None:
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            offset = struct.unpack(endian + "f", header[108:112])[0]
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(endian + "h", header[14:16])[0]
            dim = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dim[0]
    if not 1 <= ndim <= 7 or bitpix <= 0 or not math.isfinite(offset) or offset < 348:
        return None  # not a single-file NIfTI we understand; leave the verdict to ITK
    voxels = math.prod(max(int(d), 1) for d in dim[1 : ndim + 1])
    return int(offset) + voxels * bitpix // 8


# Bytes per element of MetaImage's element types.
_MET_SIZES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}


# MetaImage header fields that carry geometry (MetaIO accepts each of the synonyms).
_MET_GEOMETRY_FIELDS = ("Offset", "Origin", "Position", "ElementSpacing", "TransformMatrix", "Rotation",
                        "Orientation", "CenterOfRotation")


def _metaimage_problem(path: Path) -> str | None:
    """Why a MetaImage (.mha, .mhd) has a damaged header or, compressed, other data than its header
    declares; None when it looks sound or is beyond what we understand (then ITK decides).

    ITK's MetaIO overflows a buffer on a header line of binary garbage, and hangs for ever or corrupts
    its heap on some damaged zlib streams, crashing the process later (found by Testing/test_fuzz.py).
    So header lines must be short text, and compressed data are decompressed here first, counting the
    bytes without keeping them.
    """
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    fields: dict[str, str] = {}
    offset = 0
    for number, line in enumerate(head.split(b"\n"), 1):
        text = line[:-1] if line.endswith(b"\r") else line
        if len(text) > 255 or any(b < 0x20 and b != 0x09 for b in text):
            return f"its header is corrupt (line {number} is not a short line of text)"
        offset += len(line) + 1
        if not text.strip():
            continue
        key, sep, value = text.partition(b"=")
        if not sep:
            return f"its header is corrupt (line {number} is not 'name = value')"
        fields[key.strip().decode("latin-1")] = value.strip().decode("latin-1")
        if key.strip() == b"ElementDataFile":
            break
    else:
        return None
    for key in _MET_GEOMETRY_FIELDS:
        if key in fields:
            try:
                values = [float(v) for v in fields[key].split()]
            except ValueError:
                return f"its header is corrupt ({key} is not a list of numbers)"
            if not all(math.isfinite(v) for v in values):
                # ITK reads a NaN here as 0 without a word, which moves the image.
                return f"its header is corrupt ({key} holds a NaN or an infinity)"
    source = fields["ElementDataFile"]
    if source == "LIST" or "%" in source:
        return None  # a list or pattern of slice files: left to ITK
    if source != "LOCAL" and not (path.parent / source).is_file():
        # Also what a damaged header's line break turns into: binary data read as a file name.
        return f"its data file {source[:80]!r} does not exist"
    if fields.get("CompressedData", "").lower() != "true":
        return None
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        expected = math.prod(dims) * channels * _MET_SIZES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None
    data_path = path
    if source != "LOCAL":
        data_path, offset = path.parent / source, 0
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip framing
    total = 0
    try:
        with open(data_path, "rb") as f:
            f.seek(offset)
            while not inflater.eof and (chunk := f.read(1 << 20)):
                while chunk and total <= expected:
                    total += len(inflater.decompress(chunk, 1 << 22))
                    chunk = inflater.unconsumed_tail
    except zlib.error as error:
        return f"its compressed data are corrupt ({error})"
    if total != expected:
        return f"its data hold {'more than ' if total > expected else ''}{total} bytes where its header declares {expected}"
    if not inflater.eof:
        return "its compressed data are truncated"
    return None
