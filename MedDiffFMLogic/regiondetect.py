"""Which body region a CT shows, told from the scan itself (`--region auto`), and from an organ label map
(synthesis, which has no scan).

Each axial slice of a copy at about 4 mm (block means: fast, and less noise) votes:
- chest: air-like tissue (-950..-500 HU) inside the body, not connected to the air around it, is at
  least LUNG_SLICE_FRACTION of the body's area in the slice (lungs; bowel gas is mostly below -950 HU
  and small);
- head_neck: a bone shell (> 300 HU) encloses brain-like tissue (-20..100 HU) over at least
  SKULL_SLICE_FRACTION of the body's area (the spinal canal is far smaller); or, without lungs and
  skull, the body is neck-sized: under NECK_TO_CHEST times the chest's area or NECK_TO_HEAD times the
  head's when the scan shows lungs or a skull, else under NECK_AREA_CM2;
- abdomen: the rest, a large soft-tissue body without lungs.
The majority of the voting slices decides; a scan whose second region holds at least MIXED_SHARE of
them is reported as mixed. Torch-free, like everything the settings and the GUIs may reach.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .anatomy import TOTALSEGMENTATOR_CLASSES
from .errors import InputError
from .grids import Orientation
from .regions import AUTO_REGION, HU_WINDOWS, REGIONS, UNKNOWN_REGION, check_region

DETECT_SPACING_MM = 4.0
BODY_HU = -500.0  # above: tissue; below: air (outside the body, or lungs and gas inside it)
LUNG_HU = (-950.0, -500.0)
BONE_HU = 300.0
BRAIN_HU = (-20.0, 100.0)
LUNG_SLICE_FRACTION = 0.10
SKULL_SLICE_FRACTION = 0.40  # interior of the bone shell / body area; brain slices measure 0.5-0.8
BRAIN_FRACTION = 0.6  # brain-like share of the shell's interior
NECK_AREA_CM2 = 150.0  # adult necks measure 100-130 cm2, abdomens 400-900 (a child's about 250)
NECK_TO_HEAD = 1.3  # neck / head area: about 0.6 in adults
NECK_TO_CHEST = 0.6  # neck / chest area: about 0.25; the upper abdomen is about the lower chest's size
MIN_BODY_CM2 = 4.0  # slices with less body do not vote
MIXED_SHARE = 0.25

# An in-plane neighbourhood: per-slice connected components and hole filling in one call.
_IN_PLANE = np.zeros((3, 3, 3), bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
_IN_PLANE_FULL = np.zeros((3, 3, 3), bool)
_IN_PLANE_FULL[1] = True


@dataclass(frozen=True)
class Detection:
    region: str  # one of REGIONS, or UNKNOWN_REGION when nothing voted
    votes: dict[str, int] = field(default_factory=dict)  # voting slices per region
    lung_fraction: float = 0.0  # lung-like voxels / body voxels, whole scan
    evidence: str = ""

    @property
    def slices(self) -> int:
        return sum(self.votes.values())

    def share(self, region: str) -> float:
        return self.votes.get(region, 0) / self.slices if self.slices else 0.0

    @property
    def mixed(self) -> bool:
        return sum(self.share(r) >= MIXED_SHARE for r in REGIONS) > 1


def detect_region(image: sitk.Image) -> Detection:
    """The body region of a CT in HU (any spacing; any axis order: it is looked at in axial slices)."""
    orientation = Orientation(image)
    hu = orientation.array_to_axial(sitk.GetArrayViewFromImage(image))
    spacing = [image.GetSpacing()[k] for k in orientation.perm]  # axial x, y, z
    hu, spacing_zyx = _downsampled(hu, tuple(reversed(spacing)))
    return _vote(*_slice_features(hu, spacing_zyx))


def _downsampled(hu: np.ndarray, spacing_zyx: tuple[float, ...]) -> tuple[np.ndarray, tuple[float, ...]]:
    """Block means towards DETECT_SPACING_MM (never upsampled)."""
    factors = [min(max(1, int(round(DETECT_SPACING_MM / s))), n) for s, n in zip(spacing_zyx, hu.shape)]
    out = hu[tuple(slice(0, n - n % f) for n, f in zip(hu.shape, factors))]
    # One axis at a time, the fastest-varying first: each pass reads its input once, in memory order
    # (0.3-0.45 s for 512 x 512 x 300 float32 on a busy 2-core machine, where strided sums took 1.2 s).
    for axis in (2, 1, 0):
        f = factors[axis]
        if f > 1:
            shape = out.shape[:axis] + (out.shape[axis] // f, f) + out.shape[axis + 1:]
            out = out.reshape(shape).sum(axis=axis + 1, dtype=np.float32)
    out = np.asarray(out, dtype=np.float32) / float(np.prod(factors))
    return out, tuple(s * f for s, f in zip(spacing_zyx, factors))


def _slice_features(hu: np.ndarray, spacing_zyx) -> tuple:
    """Per axial slice: body area (cm2), lung-like fraction, skull-with-brain flag; and the lung voxels."""
    air = hu < BODY_HU
    labels, count = ndimage.label(air, structure=_IN_PLANE)
    border = np.zeros(count + 1, bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        border[np.unique(edge)] = True
    border[0] = False
    # Air reaching the image border is outside the body, unless it reads as lung: a field of view that
    # cuts through the chest wall leaves the lungs touching the border (room air is about -1000 HU)
    if count:
        means = np.concatenate([[0.0], ndimage.mean(hu, labels, np.arange(1, count + 1))])
        border &= means < LUNG_HU[0]
    outside = border[labels]
    body = ~outside
    lung = body & (hu >= LUNG_HU[0]) & (hu <= LUNG_HU[1])
    bone = body & (hu > BONE_HU)
    # The shell grown by a voxel, so that thin or diagonal stretches of skull at 4 mm stay closed; a field
    # of view that cuts through the head leaves the shell open at the cut: the body's voxels on the
    # image border close it.
    shell = ndimage.binary_dilation(bone, structure=_IN_PLANE_FULL)
    for edge in ((slice(None), 0), (slice(None), -1), (slice(None), slice(None), 0), (slice(None), slice(None), -1)):
        shell[edge] |= body[edge]
    interior = ndimage.binary_fill_holes(shell, structure=_IN_PLANE) & ~shell
    brain = interior & (hu >= BRAIN_HU[0]) & (hu <= BRAIN_HU[1])
    pixel_cm2 = spacing_zyx[1] * spacing_zyx[2] / 100.0
    body_n = body.sum(axis=(1, 2)).astype(float)
    interior_n = interior.sum(axis=(1, 2))
    lung_fraction = lung.sum(axis=(1, 2)) / np.maximum(body_n, 1.0)
    brain_n = brain.sum(axis=(1, 2))
    skull = (interior_n > 0) & (interior_n >= SKULL_SLICE_FRACTION * body_n) & (brain_n >= BRAIN_FRACTION * interior_n)
    return body_n * pixel_cm2, lung_fraction, skull, float(lung.sum()) / max(float(body_n.sum()), 1.0)


def _vote(area_cm2: np.ndarray, lung_fraction: np.ndarray, skull: np.ndarray, lung_total: float) -> Detection:
    voting = area_cm2 >= MIN_BODY_CM2
    if not voting.any():
        return Detection(UNKNOWN_REGION, {}, 0.0, f"no body found (nothing above {BODY_HU:g} HU)")
    chest = voting & (lung_fraction >= LUNG_SLICE_FRACTION)
    head = voting & ~chest & skull
    soft = voting & ~chest & ~head
    # Beside lungs or a skull in the same scan, "neck-sized" is relative to them (phantoms are scaled
    # to their field of view); alone, it is the absolute NECK_AREA_CM2.
    limits = [k * float(np.median(area_cm2[s])) for k, s in ((NECK_TO_CHEST, chest), (NECK_TO_HEAD, head)) if s.any()]
    neck_cm2 = min(limits) if limits else NECK_AREA_CM2
    neck = soft & (area_cm2 < neck_cm2)
    votes = {"head_neck": int(head.sum() + neck.sum()), "chest": int(chest.sum()), "abdomen": int((soft & ~neck).sum())}
    # Ties go to the widest window (chest), which clips least.
    region = max(("chest", "abdomen", "head_neck"), key=lambda r: votes[r])
    n = int(voting.sum())
    if region == "chest":
        evidence = f"lungs {100 * lung_total:.0f}% of the body"
    elif region == "head_neck":
        parts = [f"skull around brain-like tissue in {int(head.sum())}"] if head.any() else []
        parts += [f"a neck-sized body (under {neck_cm2:.0f} cm2) in {int(neck.sum())}"] if neck.any() else []
        evidence = " and ".join(parts) + f" of {n} slices"
    else:
        evidence = (f"lungs {100 * lung_total:.0f}% of the body, soft-tissue body of "
                    f"{float(np.median(area_cm2[soft & ~neck])):.0f} cm2 in {votes['abdomen']} of {n} slices")
    detection = Detection(region, votes, lung_total, evidence)
    if detection.mixed:
        shown = ", ".join(f"{r} {votes[r]}" for r in REGIONS if votes[r])
        evidence += f"; a mixed scan (slices: {shown}), the majority decides"
        detection = Detection(region, votes, lung_total, evidence)
    return detection


# Organ labels (anatomy.py's TotalSegmentator classes) that say which region a label map shows.
_LABEL_GROUPS = {
    "chest": ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
              "lung_lower_lobe_right", "heart"),
    "head_neck": ("brain", "skull", "thyroid_gland"),
    "abdomen": ("liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "small_bowel", "duodenum",
                "colon", "urinary_bladder", "gallbladder"),
}


def region_from_labels(labels: sitk.Image) -> Detection:
    """The region an organ label map shows: each axial slice votes for the group (lungs and heart; brain,
    skull and thyroid; abdominal organs) covering most of it; the majority decides."""
    index = {name: i for i, name in TOTALSEGMENTATOR_CLASSES.items()}
    array = Orientation(labels).array_to_axial(sitk.GetArrayViewFromImage(labels))
    areas = np.stack([np.isin(array, [index[n] for n in names]).sum(axis=(1, 2)) for names in _LABEL_GROUPS.values()])
    voting = areas.max(axis=0) > 0
    winner = np.argmax(areas, axis=0)
    groups = tuple(_LABEL_GROUPS)
    votes = {g: int((voting & (winner == i)).sum()) for i, g in enumerate(groups)}
    if not voting.any():
        return Detection(UNKNOWN_REGION, votes, 0.0,
                         "no lungs, heart, brain, skull, thyroid or abdominal organs in the label map")
    region = max(("chest", "abdomen", "head_neck"), key=lambda r: votes[r])
    evidence = f"{', '.join(_LABEL_GROUPS[region][:3])}... in {votes[region]} of {int(voting.sum())} labelled slices"
    return Detection(region, votes, 0.0, evidence)


def resolve_region(region: str, image: sitk.Image | None, labels=None, progress=None) -> str:
    """The region a task runs with: `auto` becomes the region detected on the image (or, without an image,
    on the organ label map `labels`: an image or a path); a given region is kept, with a warning when
    the scan (or the label map) shows another. Says what was detected (progress note "region")."""
    check_region(region, auto=True)
    if image is None and labels is None:
        if region == AUTO_REGION:
            raise InputError(NO_SCAN)
        return region
    if image is not None:
        detection, source, scan = detect_region(image), "detected", "scan"
    else:
        if not isinstance(labels, sitk.Image):
            from . import ctio

            labels = ctio.read_label_map(labels)
        detection, source, scan = region_from_labels(labels), "detected from the label map", "label map"
    if region == AUTO_REGION:
        if detection.region != UNKNOWN_REGION:
            _note(progress, f"{detection.region} ({source}: {detection.evidence})")
        elif image is None:
            raise InputError(f"--region auto: cannot tell the region from the label map ({detection.evidence}); "
                             f"pass --region {' / '.join(REGIONS)}")
        else:
            _note(progress, f"unknown (could not detect one: {detection.evidence}); the widest window "
                            f"{_window(UNKNOWN_REGION)} and no region condition; pass --region to choose")
        return detection.region
    # A mixed scan warns too: the region given is then not what most of the scan shows.
    if region in REGIONS and detection.region not in (UNKNOWN_REGION, region):
        warnings.warn(
            f"--region {region}, but the {scan} looks like {detection.region} ({detection.evidence}); running "
            f"with {region} (HU window {_window(region)}) as asked. Leave --region out (auto) or pass "
            f"--region {detection.region} if that was a mistake"
        )
    _note(progress, f"{region} (given; {source}: {detection.region}, {detection.evidence})")
    return region


NO_SCAN = "--region auto needs a scan or an organ label map to detect the region from: pass --region head_neck, chest or abdomen"


def _window(region: str) -> str:
    low, high = HU_WINDOWS[region]
    return f"[{low:g}, {high:g}] HU"


def _note(progress, message: str) -> None:
    if progress is not None:
        progress.note("region", message)
