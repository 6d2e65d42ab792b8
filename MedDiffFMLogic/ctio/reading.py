"""Reading CT volumes and label maps (image files and DICOM series folders), with the checks that turn
a wrong input into a message naming the problem and the remedy.

Plausible HU: read_ct refuses a volume whose values cannot be a CT in Hounsfield units (an MR or PET, a
normalised or 8-bit export, a CT without its rescale intercept), because the model would turn it into
confident nonsense. Inside `with allow_unusual_hu():` (the CLI's --force) it warns and reads it anyway.
A caller reading back what the engine wrote (a task's results, e.g. an anomaly map in HU differences:
results, not scans) passes check_hu=False.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .formats import _READ_HINT, _extension, _itk_reason, _metaimage_problem, _nifti_shortfall, _path

# Consecutive DICOM slice positions may differ by this fraction of the median spacing.
SLICE_GAP_TOLERANCE = 0.01

# Plausible CT in HU: air -1000, fat -100, water 0, bone up to ~3000, metal up to ~30000 on an
# extended scale (Siemens: 30710); padding outside the field of view -1024, -2000, -2048, -3024 or
# -32768. Every body CT, and every crop of one with fat or lung in it, has a voxel below -100 HU.
HU_NO_TISSUE_BELOW = -100.0
HU_LIMIT = 50_000.0  # beyond +-this, no CT (even bspline overshoot of -32768 padding gets there)


# How deep below the given folder a DICOM series is looked for (a CD export's DICOM/patient/study/series).
DICOM_SEARCH_DEPTH = 4
DICOM_SEARCH_FOLDERS = 500  # at most this many subfolders are scanned (a home folder passed by mistake)


@contextlib.contextmanager
def _quiet_itk() -> Iterator[None]:
    """ITK prints its warnings ("No Series were found", "Non uniform sampling") raw on stderr, with a
    C++ source location; what they say is checked here and reported as a message of our own."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _series_ids(folder: Path) -> list[str]:
    try:
        with _quiet_itk():
            return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError as error:
        raise InputError(f"{folder}: could not scan the folder for DICOM: {_itk_reason(error)}") from error


def _series_names(folder: Path, uid: str) -> list[str]:
    with _quiet_itk():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def _dicom_series_files(folder: Path, series_uid: str | None) -> list[str]:
    uids = _series_ids(folder)
    if not uids:
        folder, series_uid = _series_in_subfolder(folder, series_uid)
        uids = _series_ids(folder)

    def listing() -> str:
        return ", ".join(f"{uid} ({len(_series_names(folder, uid))} slices)" for uid in uids)

    if series_uid is None:
        if len(uids) > 1:
            raise InputError(
                f"{folder}: the folder holds {len(uids)} DICOM series: {listing()}; "
                "pass the UID of the one to read as series_uid"
            )
        series_uid = uids[0]
    elif series_uid not in uids:
        raise InputError(f"{folder}: no DICOM series with UID {series_uid}; the folder holds {listing()}")
    names = _series_names(folder, series_uid)
    _check_slice_positions(folder, names)
    # Each _series_names() call rescans the folder: the series already listed is not listed again.
    _warn_unread_dicom(folder, [n for uid in uids for n in (names if uid == series_uid else _series_names(folder, uid))])
    return names


def _series_in_subfolder(folder: Path, series_uid: str | None) -> tuple[Path, str]:
    """The subfolder and UID of the series to read when `folder` itself holds none (a study folder, a CD
    export): the series with series_uid, else the one with the most slices (the scan, not a scout or a
    dose report). Which one was taken, and what else was there, is said in a warning."""
    found: list[tuple[Path, str, int]] = []  # (subfolder, uid, slices)
    level, scanned = [folder], 0
    for _ in range(DICOM_SEARCH_DEPTH):
        level = sorted(sub for parent in level for sub in _subfolders(parent))
        for sub in level[:DICOM_SEARCH_FOLDERS - scanned]:
            found += [(sub, uid, len(_series_names(sub, uid))) for uid in _series_ids(sub)]
        scanned += len(level)
        if scanned >= DICOM_SEARCH_FOLDERS:
            break
    where = f"in the folder or its subfolders (up to {DICOM_SEARCH_DEPTH} levels deep)"
    if not found:
        raise InputError(f"{folder}: no DICOM series {where}; {_READ_HINT}")

    def named(entry: tuple[Path, str, int]) -> str:
        return f"{entry[1]} ({entry[2]} slices) in {entry[0].relative_to(folder)}"

    listing = "; ".join(named(entry) for entry in found)
    if series_uid is not None:
        chosen = [entry for entry in found if entry[1] == series_uid]
        if not chosen:
            raise InputError(f"{folder}: no DICOM series with UID {series_uid} {where}; found {listing}")
    else:
        most = max(entry[2] for entry in found)
        chosen = [entry for entry in found if entry[2] == most]
        if len(chosen) > 1:
            raise InputError(
                f"{folder}: {len(chosen)} DICOM series with {most} slices each in its subfolders: "
                f"{'; '.join(named(entry) for entry in chosen)}; pass the subfolder of the one to read"
            )
    sub, uid, slices = chosen[0]
    others = [named(entry) for entry in found if entry is not chosen[0]]
    warnings.warn(
        f"{folder}: reading DICOM series {uid} ({slices} slices) from the subfolder {sub.relative_to(folder)}"
        + (f"; also found {'; '.join(others)} (pass its subfolder to read another)" if others else ""),
        stacklevel=5,
    )
    return sub, uid


def _subfolders(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith(".")]
    except OSError:
        return []  # unreadable: nothing to find there


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
        with _quiet_itk() if p.is_dir() else contextlib.nullcontext():  # what GDCM warns of is checked above
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


def _check_hu(image: sitk.Image, stored_type: int, p: Path) -> None:
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


def read_ct(path: str | os.PathLike, series_uid: str | None = None, *, check_hu: bool = True) -> sitk.Image:
    """Read a CT volume (image file or DICOM series folder) as a 3D float32 image in HU.

    series_uid picks one series in a DICOM folder (ignored for files). DICOM slice order and rescale
    slope/intercept are applied by ImageSeriesReader.
    Raises InputError naming the file and the remedy when the input is not one finite 3D scalar volume,
    or when its values are implausible for a CT in HU (see allow_unusual_hu); check_hu=False skips
    that last check, for reading back a result (an anomaly map, say), which is not a scan.
    """
    image, p = _read_any(path, series_uid)
    stored_type = image.GetPixelID()
    image = sitk.Cast(image, sitk.sitkFloat32)
    _check_finite(sitk.GetArrayViewFromImage(image), p)
    if check_hu:
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
