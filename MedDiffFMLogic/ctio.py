"""CT input and output with geometry.

SimpleITK images are the engine's single geometry convention: spacing, origin and direction travel with
the voxels, in ITK's LPS world frame. Arrays taken from them are (z, y, x).

Geometry round-trip tolerances (measured with SimpleITK 2.5 / ITK 5.4, asserted in Testing/test_ctio.py):
- NRRD (.nrrd) and MetaImage (.mha): exact to ~1e-15 (NRRD stores direction*spacing as %.17g text and the
  reader takes column norms back apart); we assert 1e-12.
- NIfTI (.nii, .nii.gz): the header stores pixdim, the quaternion and the sform as float32, so every
  number comes back rounded to float32: spacing and origin to a relative 2**-24 (about 6e-8; 2e-5 mm
  for an origin at 300 mm), direction cosines to about 1e-7. We assert spacing and origin to a relative
  1e-6 (origin relative to max(1 mm, |origin|)) and direction to 1e-6 absolute.

Plausible HU: read_ct refuses a volume whose values cannot be a CT in Hounsfield units (an MR or PET, a
normalised or 8-bit export, a CT without its rescale intercept), because the model would turn it into
confident nonsense. Inside `with allow_unusual_hu():` (the CLI's --force) it warns and reads it anyway.
Files this process wrote itself with write_image (a task's results, e.g. an anomaly map in HU
differences) are results, not scans, and are read without the check.
"""

from __future__ import annotations

import contextlib
import contextvars
import gzip
import math
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .regions import hu_to_unit, unit_to_hu

READ_FORMATS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
WRITE_FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha")
INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}
# Consecutive DICOM slice positions may differ by this fraction of the median spacing.
SLICE_GAP_TOLERANCE = 0.01

# Plausible CT in HU: air -1000, fat -100, water 0, bone up to ~3000, metal up to ~30000 on an
# extended scale (Siemens: 30710); padding outside the field of view -1024, -2000, -2048, -3024 or
# -32768. Every body CT, and every crop of one with fat or lung in it, has a voxel below -100 HU.
HU_NO_TISSUE_BELOW = -100.0
HU_LIMIT = 50_000.0  # beyond +-this, no CT (even bspline overshoot of -32768 padding gets there)

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


# ----------------------------------------------------------------------------------------------- reading


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


def _dicom_series_files(folder: Path, series_uid: str | None) -> list[str]:
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as error:
        raise InputError(f"{folder}: could not scan the folder for DICOM: {_itk_reason(error)}") from error
    if not uids:
        raise InputError(f"{folder}: the folder holds no DICOM series; {_READ_HINT}")

    def files(uid: str) -> list[str]:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))

    def listing() -> str:
        return ", ".join(f"{uid} ({len(files(uid))} slices)" for uid in uids)

    if series_uid is None:
        if len(uids) > 1:
            raise InputError(
                f"{folder}: the folder holds {len(uids)} DICOM series: {listing()}; "
                "pass the UID of the one to read as series_uid"
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"{folder}: no DICOM series with UID {series_uid}; the folder holds {listing()}")
    names = files(series_uid)
    _check_slice_positions(folder, names)
    # Each files() call rescans the folder: the series already listed is not listed again.
    _warn_unread_dicom(folder, [name for uid in uids for name in (names if uid == series_uid else files(uid))])
    return names


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".ima"):
        return True
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _warn_unread_dicom(folder: Path, listed: Sequence[str]) -> None:
    """Warn about DICOM-looking files that belong to no series GDCM could read.

    GDCM leaves out a slice it cannot parse (truncated copy, damaged header) without a word; at either
    end of the series the rest is still evenly spaced, so the volume would silently lose a slice. A
    file of another kind (RTSTRUCT, DICOMDIR) is left out the same way and cannot be told apart
    without a full DICOM parser, so this warns rather than refuses.
    """
    known = {Path(name).resolve() for name in listed}
    unread = sorted(
        entry.name for entry in folder.iterdir()
        if entry.is_file() and entry.name.upper() != "DICOMDIR" and entry.resolve() not in known
        and _looks_like_dicom(entry)
    )
    if unread:
        shown = ", ".join(unread[:3]) + (f" and {len(unread) - 3} more" if len(unread) > 3 else "")
        warnings.warn(
            f"{folder}: {len(unread)} DICOM file(s) in the folder could not be read as image slices ({shown}); "
            "if they are damaged slices of this series, the volume is missing them",
            stacklevel=5,
        )


def _check_slice_positions(folder: Path, names: Sequence[str]) -> None:
    """Refuse a series with missing, duplicated or differently oriented slices.

    ImageSeriesReader only warns about these, and then assumes uniform spacing, which puts every slice
    after a gap at the wrong position.
    """
    positions, orientations = [], []
    reader = sitk.ImageFileReader()
    for name in names:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            position = reader.GetMetaData("0020|0032") if reader.HasMetaDataKey("0020|0032") else None
            orientation = reader.GetMetaData("0020|0037") if reader.HasMetaDataKey("0020|0037") else None
        except RuntimeError as error:
            raise InputError(f"{name}: unreadable DICOM file: {_itk_reason(error)}") from error
        if position is None or orientation is None:
            return  # no positions to check; ImageSeriesReader uses its own ordering and spacing
        try:
            positions.append([float(v) for v in position.split("\\")])
            orientations.append([float(v) for v in orientation.split("\\")])
            if len(positions[-1]) != 3 or len(orientations[-1]) != 6 or not np.isfinite(
                    positions[-1] + orientations[-1]).all():
                raise ValueError("not 3 and 6 finite numbers")
        except ValueError as error:
            raise InputError(f"{name}: malformed ImagePositionPatient or ImageOrientationPatient") from error
    if len(names) < 2:
        return
    orientation = np.asarray(orientations[0])
    if any(np.abs(np.asarray(o) - orientation).max() > 1e-4 for o in orientations):
        raise InputError(
            f"{folder}: the DICOM slices have different orientations (ImageOrientationPatient); "
            "the series is not one volume. Export it as a single volume (e.g. NRRD) first"
        )
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = np.sort(np.asarray(positions) @ normal)
    steps = np.diff(offsets)
    spacing = float(np.median(steps))
    if spacing <= 1e-6 or steps.min() <= 1e-6:
        raise InputError(
            f"{folder}: several DICOM slices share one position (multiple acquisitions or phases in "
            "one series?); put each volume in its own folder or series"
        )
    worst = int(np.argmax(np.abs(steps - spacing)))
    if abs(steps[worst] - spacing) > SLICE_GAP_TOLERANCE * spacing:
        raise InputError(
            f"{folder}: the DICOM slice positions are not evenly spaced: {steps[worst]:.4g} mm between "
            f"slices {worst + 1} and {worst + 2} (of {len(names)}) where the series spacing is "
            f"{spacing:.4g} mm; slices are missing. Re-export the complete series"
        )


def _read_any(path: str | os.PathLike, series_uid: str | None) -> tuple[sitk.Image, Path]:
    """Read a file or DICOM folder into a 3D scalar image of its stored pixel type."""
    p = _path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; {_READ_HINT}")
    if p.is_dir():
        names = _dicom_series_files(p, series_uid)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        what = "DICOM series"
    else:
        if p.stat().st_size == 0:
            raise InputError(f"{p}: the file is empty; {_READ_HINT}")
        if _extension(p) in (".nii", ".nii.gz"):
            shortfall = _nifti_shortfall(p)
            if shortfall:
                raise InputError(f"{p}: unreadable NIfTI, {shortfall}; re-export or re-copy the file")
        if _extension(p) in (".mha", ".mhd"):
            problem = _metaimage_problem(p)
            if problem:
                raise InputError(f"{p}: could not read the MetaImage, {problem}; re-export or re-copy the file")
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(p))
        what = "file"
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(
            f"{p}: could not read the {what} (truncated, corrupt or not an image?): "
            f"{_itk_reason(error, p)}; {_READ_HINT}"
        ) from error
    image = _as_scalar_volume(image, p)
    _check_geometry(image, p)
    direction = np.asarray(image.GetDirection())
    # VNL's SVD (ITK's direction inverse) fails on cosines whose square underflows (|v| < 1.5e-154:
    # subnormal ones, and normal ones down there too), and resampling then maps every voxel outside;
    # they stand for 0 anyway.
    negligible = (direction != 0) & (np.abs(direction) < np.sqrt(np.finfo(float).tiny))
    if negligible.any():
        image.SetDirection(np.where(negligible, 0.0, direction).tolist())
    return image, p


def _check_geometry(image: sitk.Image, p: Path) -> None:
    """Refuse non-finite or degenerate geometry, which ITK passes on from a corrupt header (a NaN in a
    NIfTI sform, an infinite DICOM slice position) and which would break every resampling later."""
    spacing, origin, direction = (np.asarray(v, dtype=float) for v in (
        image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    matrix = direction.reshape(3, 3)
    if (
        not (np.isfinite(spacing).all() and np.isfinite(origin).all() and np.isfinite(direction).all())
        or spacing.min() <= 0
        or abs(np.linalg.det(matrix)) < 1e-6
    ):
        raise InputError(
            f"{p}: the image's geometry is invalid (spacing {spacing.tolist()}, origin {origin.tolist()}, "
            f"direction {direction.round(6).tolist()}): its header is corrupt. Re-export the image"
        )


_VECTOR_TYPES = {getattr(sitk, n) for n in dir(sitk) if n.startswith("sitkVector")}


def _as_scalar_volume(image: sitk.Image, p: Path) -> sitk.Image:
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(
            f"{p}: the image has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(a vector, colour or multi-channel image); a CT has one value per voxel. "
            "Pass a single-channel volume"
        )
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{p}: the image has complex voxels; pass a real-valued CT")
    if image.GetPixelID() in _VECTOR_TYPES:
        image = sitk.VectorIndexSelectionCast(image, 0)
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        # A 4D file holding one volume (some exporters write t = 1) is that volume.
        image = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    if image.GetDimension() > 3:
        raise InputError(
            f"{p}: the image is {image.GetDimension()}D (size {image.GetSize()}), e.g. a time series; "
            "pass one 3D volume"
        )
    if image.GetDimension() < 3 or min(image.GetSize()) < 2:
        raise InputError(
            f"{p}: the image is 2D (size {image.GetSize()}), a single slice; a CT volume needs at "
            "least 2 voxels along every axis. If this is one file of a DICOM series, pass the folder "
            "holding the whole series"
        )
    return image


def _check_finite(array: np.ndarray, p: Path) -> None:
    if array.dtype.kind == "f":
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise InputError(
                f"{p}: {bad} voxels are NaN or Inf; a CT needs finite HU everywhere. "
                "Replace them (e.g. with -1024 HU, air) and save the volume again"
            )


# "refuse" (the default) or "warn" (inside allow_unusual_hu). A ContextVar, so that a library caller's
# choice holds for what it calls and ends with its `with` block.
_HU_POLICY: contextvars.ContextVar[str] = contextvars.ContextVar("meddifffm_hu_policy", default="refuse")


@contextlib.contextmanager
def allow_unusual_hu() -> Iterator[None]:
    """Inside this block read_ct warns about, instead of refusing, values implausible for a CT in HU.

    The Python equivalent of the CLI's --force:
        with ctio.allow_unusual_hu():
            denoise.run(config, "mr_scan.nii.gz", "out.nii.gz")
    """
    token = _HU_POLICY.set("warn")
    try:
        yield
    finally:
        _HU_POLICY.reset(token)


def unusual_hu(array: np.ndarray, stored_type: int) -> str | None:
    """Why voxel values (already in HU, finite) cannot be a CT, or None when they can."""
    if stored_type in (sitk.sitkUInt8, sitk.sitkInt8):
        return "the voxels are stored in 8 bits, which cannot hold CT's range of -1000 (air) to 1000s (bone)"
    if array.size == 0:
        return None
    lo, hi = float(array.min()), float(array.max())
    if lo < -HU_LIMIT or hi > HU_LIMIT:
        return f"values reach {lo if lo < -HU_LIMIT else hi:g}, beyond any CT (+-{HU_LIMIT:g} HU)"
    if lo >= HU_NO_TISSUE_BELOW:
        return (
            f"no voxel lies below {HU_NO_TISSUE_BELOW:g} HU (the lowest is {lo:g}), so there is no air, "
            "lung or fat"
        )
    return None


# Files this process wrote with write_image: resolved path -> (mtime_ns, size) right after writing.
_WRITTEN: dict[str, tuple[int, int]] = {}


def _written_here(p: Path) -> bool:
    try:
        st = p.stat()
        return _WRITTEN.get(str(p.resolve())) == (st.st_mtime_ns, st.st_size)
    except OSError:
        return False


def _check_hu(image: sitk.Image, stored_type: int, p: Path) -> None:
    if p.is_file() and _written_here(p):
        return
    reason = unusual_hu(sitk.GetArrayViewFromImage(image), stored_type)
    if reason is None:
        return
    what = (
        f"{p}: the image does not look like a CT in Hounsfield units: {reason}. Is it an MR or PET, "
        "a normalised or 8-bit export, or a CT saved without its rescale intercept"
    )
    if _HU_POLICY.get() == "warn":
        warnings.warn(f"{what}? Going on because --force was given; expect meaningless results", stacklevel=3)
        return
    raise InputError(
        f"{what}? Pass a CT in HU, or use --force to run on it anyway "
        "(Python: `with ctio.allow_unusual_hu():`)"
    )


def read_ct(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a CT volume (image file or DICOM series folder) as a 3D float32 image in HU.

    series_uid picks one series in a DICOM folder (ignored for files). DICOM slice order and rescale
    slope/intercept are applied by ImageSeriesReader.
    Raises InputError naming the file and the remedy when the input is not one finite 3D scalar volume,
    or when its values are implausible for a CT in HU (see allow_unusual_hu).
    """
    image, p = _read_any(path, series_uid)
    stored_type = image.GetPixelID()
    image = sitk.Cast(image, sitk.sitkFloat32)
    _check_finite(sitk.GetArrayViewFromImage(image), p)
    _check_hu(image, stored_type, p)
    return image


def read_label_map(path: str | os.PathLike, series_uid: str | None = None) -> sitk.Image:
    """Read a label map as a 3D UInt8 image (UInt16 when a label exceeds 255); labels must be integers >= 0."""
    image, p = _read_any(path, series_uid)
    array = sitk.GetArrayViewFromImage(image)
    _check_finite(array, p)
    if array.size and array.min() < 0:
        raise InputError(
            f"{p}: the label map has negative values (minimum {array.min()}); labels must be "
            "non-negative integers"
        )
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError(
            f"{p}: the label map has non-integer values; is it an intensity image? Labels must be "
            "non-negative integers"
        )
    top = float(array.max()) if array.size else 0.0
    if top > np.iinfo(np.uint16).max:
        raise InputError(f"{p}: label {top:g} is larger than 65535; renumber the labels")
    return sitk.Cast(image, sitk.sitkUInt8 if top <= 255 else sitk.sitkUInt16)


# ----------------------------------------------------------------------------------------------- writing


def write_image(image: sitk.Image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write image atomically to .nii, .nii.gz, .nrrd or .mha and return the path.

    The data go to a hidden temporary file in the target folder, which is renamed over the target only
    when SimpleITK has finished; on failure nothing appears at path. compress gzips NRRD and MHA
    (.nii is never compressed, .nii.gz always is).
    """
    if not isinstance(image, sitk.Image):
        raise TypeError(f"write_image needs a SimpleITK image, not {type(image).__name__}")
    p = _path(path)
    ext = _extension(p)
    if ext not in WRITE_FORMATS or p.name.lower() == ext:
        raise InputError(
            f"{p}: cannot write {ext or 'a file without an extension'}; "
            f"use one of {', '.join(WRITE_FORMATS)}"
        )
    folder = p.parent.resolve()
    if not folder.is_dir():
        raise InputError(f"{p}: the output folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{p}: the output folder {folder} is not writable; choose another output path")
    if p.is_dir():
        raise InputError(f"{p}: is a folder; give an output file name ending in {ext}")
    stem = p.name[: -len(ext)]
    temporary = folder / f".{stem}.tmp-{secrets.token_hex(6)}{ext}"
    try:
        sitk.WriteImage(image, str(temporary), useCompression=compress)
        os.replace(temporary, p)
        st = p.stat()
        _WRITTEN[str(p.resolve())] = (st.st_mtime_ns, st.st_size)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, (RuntimeError, OSError)):
            reason = _itk_reason(error) if isinstance(error, RuntimeError) else str(error)
            raise InputError(f"{p}: could not write the image: {reason}") from error
        raise
    return p


# ----------------------------------------------------------------------------------------------- arrays


def to_array(image: sitk.Image) -> np.ndarray:
    """The voxels as a (z, y, x) float32 array (a copy)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("to_array needs a scalar image")
    return np.array(sitk.GetArrayViewFromImage(image), dtype=np.float32, copy=True)


def from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding array (z, y, x) on the reference's grid (spacing, origin, direction)."""
    array = np.asarray(array)
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match the reference's {expected} (z, y, x)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.CopyInformation(reference)
    return image


def window_to_unit(image: sitk.Image, region: str) -> np.ndarray:
    """HU -> the network's [-1, 1] through the region's window (values outside it are clipped), (z, y, x) float32."""
    return hu_to_unit(to_array(image), region).astype(np.float32, copy=False)


def unit_to_image(unit: np.ndarray, reference: sitk.Image, region: str) -> sitk.Image:
    """[-1, 1] -> a float32 HU image on the reference's grid; inverse of window_to_unit inside the window."""
    return from_array(unit_to_hu(unit, region).astype(np.float32, copy=False), reference)


# ----------------------------------------------------------------------------------------------- grids


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> bool:
    """True when a and b have the same size and, within tol (absolute), the same spacing, origin and direction."""
    return (
        a.GetDimension() == b.GetDimension()
        and a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=tol)
    )


def _interpolator(name: str) -> int:
    try:
        return INTERPOLATORS[name]
    except KeyError:
        raise InputError(
            f"unknown interpolator {name!r}; choose one of {', '.join(INTERPOLATORS)}"
        ) from None


def _output_type(image: sitk.Image, interpolator: str) -> int:
    # Interpolated values of an integer image are fractional; labels keep their type.
    if interpolator != "nearest" and image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return sitk.sitkFloat32
    return image.GetPixelID()


def _default_value(image: sitk.Image, interpolator: str, default_value: float | None) -> float:
    if default_value is not None:
        return float(default_value)
    if interpolator == "nearest":
        return 0.0
    # Outside the scan is air: the image's minimum.
    return float(sitk.GetArrayViewFromImage(image).min())


def _resample(image, size, spacing, origin, direction, interpolator, default_value):
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing([float(s) for s in spacing])
    f.SetOutputOrigin([float(o) for o in origin])
    f.SetOutputDirection([float(d) for d in direction])
    f.SetTransform(sitk.Transform())
    f.SetInterpolator(_interpolator(interpolator))
    f.SetDefaultPixelValue(_default_value(image, interpolator, default_value))
    f.SetOutputPixelType(_output_type(image, interpolator))
    return f.Execute(image)


def resample_to_spacing(
    image: sitk.Image, spacing: Sequence[float], interpolator: str = "linear"
) -> sitk.Image:
    """Resample onto a grid of the given spacing with the same origin, direction and physical extent.

    size_new = round(size * spacing_old / spacing_new), at least 1. Outside the input the value is the
    image's minimum (air) for "linear" and "bspline", 0 for "nearest".
    """
    _interpolator(interpolator)
    spacing = [float(s) for s in spacing]
    if len(spacing) != image.GetDimension() or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"spacing {spacing} is invalid; give {image.GetDimension()} positive numbers in mm"
        )
    size = [
        max(1, int(round(n * old / new)))
        for n, old, new in zip(image.GetSize(), image.GetSpacing(), spacing)
    ]
    return _resample(
        image, size, spacing, image.GetOrigin(), image.GetDirection(), interpolator, None
    )


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    interpolator: str = "linear",
    default_value: float | None = None,
) -> sitk.Image:
    """Resample image onto the reference's exact grid (size, spacing, origin, direction).

    When the grids already agree within 1e-9 the voxels are returned unchanged (bit-identical), with
    the reference's geometry. default_value None means the image's minimum, or 0 for "nearest".
    """
    _interpolator(interpolator)
    if same_grid(image, reference, tol=1e-9):
        out = sitk.Cast(image, _output_type(image, interpolator))
        out.CopyInformation(reference)
        return out
    return _resample(
        image,
        reference.GetSize(),
        reference.GetSpacing(),
        reference.GetOrigin(),
        reference.GetDirection(),
        interpolator,
        default_value,
    )
