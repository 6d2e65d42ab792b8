"""Cutting whole-body CT (TotalSegmentator, AutoPET) into the paper's three regions with a
TotalSegmentator label map, and adding the body class (118) to such a map.

The paper cuts whole-body scans "with TotalSegmentator masks" but gives no rule; ours (seeds/choices.md,
docs/training.md) uses landmarks along the patient's long axis, with MARGIN_MM of overlap:
  head_neck: from the top of the scan down to MARGIN_MM below the lung apices; needs brain, skull or a
             cervical vertebra in the scan.
  chest:     from MARGIN_MM above the lung apices to MARGIN_MM below the lowest lung voxel (the costophrenic
             recesses); needs lungs.
  abdomen:   from MARGIN_MM above the top of the liver or spleen (the diaphragm's dome) down to the lowest
             voxel of the hips, sacrum or urinary bladder (the pelvis), or, without them, MARGIN_MM below
             the kidneys; needs liver or spleen.
A region whose landmarks are absent, or that is shorter than MIN_EXTENT_MM, is skipped. Every cut is a
box of whole axial slices: in-plane content is untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import ctio
from ..anatomy import BODY_LABEL, label_index
from ..errors import InputError
from ..regions import REGIONS, check_region
from .manifest import Record, read_manifest, write_manifest

MARGIN_MM = 20.0
MIN_EXTENT_MM = 80.0
BODY_THRESHOLD_HU = -500.0

_LUNGS = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
          "lung_lower_lobe_right")
_HEAD = ("brain", "skull", *[f"vertebrae_C{i}" for i in range(1, 8)])
_DOME = ("liver", "spleen")
_PELVIS = ("hip_left", "hip_right", "sacrum", "urinary_bladder")
_KIDNEYS = ("kidney_left", "kidney_right")


def _slice_axis(image: sitk.Image) -> tuple[int, float]:
    """The array axis (0 = z, 1 = y, 2 = x) closest to the patient's head-foot axis, and the sign of its
    direction (+1: increasing index goes towards the head in LPS)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    column = int(np.argmax(np.abs(direction[2])))  # image axis (x, y, z order) with the largest z component
    return 2 - column, float(np.sign(direction[2, column]))


def region_slices(labels: sitk.Image) -> dict[str, tuple[int, int]]:
    """For a TotalSegmentator label map, the [start, stop) index range along the head-foot array axis of
    each region present (see the module's rule)."""
    array = sitk.GetArrayViewFromImage(labels)
    axis, sign = _slice_axis(labels)
    spacing = labels.GetSpacing()[2 - axis]
    n = array.shape[axis]
    # position of each slice in mm along the head-foot axis, increasing towards the head
    height = np.arange(n) * spacing * sign
    others = tuple(a for a in range(3) if a != axis)

    def present(names) -> np.ndarray:
        values = [label_index(name) for name in names]
        return np.isin(array, values).any(axis=others)

    def extent(mask: np.ndarray) -> tuple[float, float] | None:
        return (float(height[mask].min()), float(height[mask].max())) if mask.any() else None

    top, bottom = float(height.max()), float(height.min())
    lungs, head, dome = extent(present(_LUNGS)), extent(present(_HEAD)), extent(present(_DOME))
    pelvis, kidneys = extent(present(_PELVIS)), extent(present(_KIDNEYS))
    ranges: dict[str, tuple[float, float]] = {}
    if head is not None:
        low = lungs[1] - MARGIN_MM if lungs is not None else bottom
        ranges["head_neck"] = (low, top)
    if lungs is not None:
        ranges["chest"] = (lungs[0] - MARGIN_MM, lungs[1] + MARGIN_MM)
    if dome is not None:
        if pelvis is not None:
            low = pelvis[0]
        elif kidneys is not None:
            low = kidneys[0] - MARGIN_MM
        else:
            low = bottom
        ranges["abdomen"] = (low, dome[1] + MARGIN_MM)
    out = {}
    for region, (low, high) in ranges.items():
        low, high = max(low, bottom), min(high, top)
        if high - low < MIN_EXTENT_MM:
            continue
        inside = np.nonzero((height >= low - 1e-6) & (height <= high + 1e-6))[0]
        out[region] = (int(inside.min()), int(inside.max()) + 1)
    return out


def _crop(image: sitk.Image, axis: int, start: int, stop: int) -> sitk.Image:
    index, size = [0, 0, 0], list(image.GetSize())
    index[2 - axis], size[2 - axis] = start, stop - start
    return sitk.RegionOfInterest(image, size, index)


def with_body_label(ct: sitk.Image, labels: sitk.Image, threshold: float = BODY_THRESHOLD_HU) -> sitk.Image:
    """The label map with class 118 ("body") on every voxel of the body that has no other class: the body
    is the largest connected component above `threshold` HU, holes filled slice by slice (the paper's
    thresholded body mask; the patient table falls away as a separate component)."""
    hu = sitk.GetArrayViewFromImage(ct)
    lab = sitk.GetArrayFromImage(labels).astype(np.uint8)
    body = hu > threshold
    components, count = ndimage.label(body)
    if count:
        sizes = ndimage.sum(body, components, index=np.arange(1, count + 1))
        body = components == (1 + int(np.argmax(sizes)))
        body = np.stack([ndimage.binary_fill_holes(s) for s in body])
    lab[(lab == 0) & body] = BODY_LABEL
    out = sitk.GetImageFromArray(lab)
    out.CopyInformation(labels)
    return out


def cut_scan(ct_path: str | os.PathLike, labels_path: str | os.PathLike, output: str | os.PathLike,
             add_body: bool = True, region: str | None = None) -> list[Record]:
    """Cut one whole-body scan into region sub-volumes (CT and labels written under `output`); with
    `region`, the scan already shows one region (a head-and-neck, chest or abdomen dataset) and is kept
    whole, only its label map gains the body class."""
    ct = ctio.read_ct(ct_path)
    labels = ctio.read_label_map(labels_path)
    if not ctio.same_grid(ct, labels, tol=1e-3):
        raise InputError(f"{labels_path} is not on the grid of {ct_path}; pass TotalSegmentator's output for this CT")
    if add_body:
        labels = with_body_label(ct, labels)
    axis, _ = _slice_axis(ct)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    stem = Path(ct_path).name.split(".")[0]
    records = []
    if region is not None:
        check_region(region)
        lab_out = ctio.write_image(labels, output / f"{stem}-{region}-labels.nii.gz")
        return [Record(image=str(Path(ct_path).resolve()), region=region, labels=str(lab_out))]
    for region, (start, stop) in region_slices(labels).items():
        ct_out = ctio.write_image(_crop(ct, axis, start, stop), output / f"{stem}-{region}.nii.gz")
        lab_out = ctio.write_image(_crop(labels, axis, start, stop), output / f"{stem}-{region}-labels.nii.gz")
        records.append(Record(image=str(ct_out), region=region, labels=str(lab_out)))
    return records


def add_command(subparsers) -> None:
    from ..cli_args import add_common

    p = subparsers.add_parser("cut-regions", help="cut a whole-body CT into head-neck, chest and abdomen "
                                                  "sub-volumes with its TotalSegmentator label map")
    p.add_argument("ct", help="whole-body CT")
    p.add_argument("labels", help="its TotalSegmentator 'total' label map (multi-label file, --ml)")
    p.add_argument("-o", "--output", required=True, help="folder for the region sub-volumes")
    p.add_argument("--manifest", help="CSV manifest to append the sub-volumes to (created if missing)")
    p.add_argument("--split", default="train", choices=("train", "val", "test"), help="split of the new rows")
    p.add_argument("--no-body", action="store_true", help="do not add the thresholded body class (118)")
    p.add_argument("--region", choices=REGIONS,
                   help="the scan shows this one region already: keep it whole, only add the body class")
    add_common(p)

    def run(args, progress):
        from dataclasses import replace

        records = [replace(r, split=args.split) for r in cut_scan(args.ct, args.labels, args.output, not args.no_body, args.region)]
        if not records:
            raise InputError(f"no region found in {args.ct}: its label map has none of the landmark organs")
        outputs = {r.region: r.image for r in records}
        if args.manifest:
            existing = read_manifest(args.manifest) if Path(args.manifest).exists() else []
            outputs["manifest"] = str(write_manifest(existing + records, args.manifest))
        return outputs

    p.set_defaults(run=run)
