"""Masks for the tasks that need one (inpaint, lesion, anomaly ROI): a label-map file on any grid that
overlaps the image, resampled nearest-neighbour onto it, checked and made binary.

Binary rule: with no --label, a mask file must hold a single non-zero value (any value: Slicer exports
a one-segment label map as 1, others use 255); several distinct values are refused with the list,
because guessing which structure was meant is worse than asking. --label L picks voxels == L.
"""

from __future__ import annotations

import os
import warnings
from typing import Iterable

import numpy as np
import SimpleITK as sitk

from .. import ctio
from ..errors import InputError


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned physical (LPS) bounding box of the image's voxel extents."""
    size = np.asarray(image.GetSize(), dtype=float)
    corners = []
    for cx in (-0.5, size[0] - 0.5):
        for cy in (-0.5, size[1] - 0.5):
            for cz in (-0.5, size[2] - 0.5):
                corners.append(image.TransformContinuousIndexToPhysicalPoint((cx, cy, cz)))
    corners = np.asarray(corners)
    return corners.min(axis=0), corners.max(axis=0)


def read_mask(
    path: str | os.PathLike,
    reference: sitk.Image,
    label: int | None = None,
    what: str = "mask",
) -> np.ndarray:
    """The mask in `path` on the reference's grid as a (z, y, x) bool array. Raises InputError when the
    file holds no mask voxels, several labels without `label`, a label it lacks, or lies outside the image."""
    labels = ctio.read_label_map(path)
    values = np.unique(sitk.GetArrayViewFromImage(labels))
    nonzero = [int(v) for v in values if v != 0]
    if not nonzero:
        raise InputError(f"{path}: the {what} is empty (every voxel is 0); draw the region to use and save it again")
    if label is None:
        if len(nonzero) > 1:
            shown = ", ".join(str(v) for v in nonzero[:10]) + (" ..." if len(nonzero) > 10 else "")
            raise InputError(
                f"{path}: the {what} holds {len(nonzero)} labels ({shown}), not one region; "
                "pass --label with the one to use, or save a single-label mask"
            )
        label = nonzero[0]
    elif label not in nonzero:
        raise InputError(f"{path}: the {what} has no voxels with label {label}; it holds {', '.join(map(str, nonzero))}")
    binary = sitk.Cast(labels == int(label), sitk.sitkUInt8)
    lo_m, hi_m = physical_bounds(binary)
    lo_i, hi_i = physical_bounds(reference)
    if np.any(hi_m <= lo_i) or np.any(hi_i <= lo_m):
        raise InputError(
            f"{path}: the {what} lies outside the image (its extent {np.round(lo_m, 1).tolist()}..{np.round(hi_m, 1).tolist()} mm "
            f"does not overlap the image's {np.round(lo_i, 1).tolist()}..{np.round(hi_i, 1).tolist()} mm); "
            "was it drawn on another scan?"
        )
    on_grid = sitk.GetArrayFromImage(ctio.resample_onto(binary, reference, "nearest", 0)).astype(bool)
    if not on_grid.any():
        raise InputError(
            f"{path}: none of the {what}'s voxels falls inside the image (the region lies outside the scan, "
            "or is smaller than one of its voxels); check that the mask was drawn on this scan"
        )
    faces = [f"{end} {axis}" for axis, n in zip("zyx", on_grid.shape) for end in ("first", "last")
             if np.take(on_grid, 0 if end == "first" else n - 1, axis="zyx".index(axis)).any()]
    if faces:
        # Allowed (a lesion may sit at the edge of the field of view), but the model has no context
        # beyond the border, and any part of the region outside the scan is dropped.
        warnings.warn(
            f"{path}: the {what} touches the image border (the {', '.join(faces)} slices); the result next to "
            "that edge has less context, and any part of the region outside the scan is ignored",
            stacklevel=2,
        )
    return on_grid


def parse_labels(text: str | Iterable[int] | None) -> list[int] | None:
    """"1,5,7" or "liver,spleen" (TotalSegmentator names) -> label indices; None stays None."""
    if text is None:
        return None
    if not isinstance(text, str):
        return [int(v) for v in text]
    from ..anatomy import label_index

    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.isdigit():
            out.append(int(part))
            continue
        try:
            out.append(label_index(part))
        except (KeyError, ValueError) as exc:
            raise InputError(f"unknown label {part!r}: give label numbers or TotalSegmentator class names") from exc
    if not out:
        raise InputError("no labels given")
    return out


def read_roi(path: str | os.PathLike, reference: sitk.Image, labels: list[int] | None = None) -> np.ndarray:
    """A region of interest from a label map: the voxels whose label is in `labels` (any non-zero label
    when None), on the reference's grid."""
    image = ctio.read_label_map(path)
    array = sitk.GetArrayViewFromImage(image)
    present = set(int(v) for v in np.unique(array)) - {0}
    if not present:
        raise InputError(f"{path}: the region-of-interest label map is empty (every voxel is 0)")
    if labels is not None:
        missing = [v for v in labels if v not in present]
        if len(missing) == len(labels):
            raise InputError(
                f"{path}: none of the labels {labels} occurs in the label map; it holds {sorted(present)[:20]}"
            )
    selected = np.isin(array, list(present if labels is None else labels)).astype(np.uint8)
    binary = sitk.GetImageFromArray(selected)
    binary.CopyInformation(image)
    lo_m, hi_m = physical_bounds(binary)
    lo_i, hi_i = physical_bounds(reference)
    if np.any(hi_m <= lo_i) or np.any(hi_i <= lo_m):
        raise InputError(f"{path}: the region-of-interest label map lies outside the image; was it made for another scan?")
    on_grid = sitk.GetArrayFromImage(ctio.resample_onto(binary, reference, "nearest", 0)).astype(bool)
    if not on_grid.any():
        raise InputError(f"{path}: the region of interest has no voxel inside the image")
    return on_grid
