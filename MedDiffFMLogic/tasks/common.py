"""What every task shares: the default models, loading them on a device, the anatomy condition, the
context box around a mask, the body mask for --skip-air, and output-path checks. (Grids: grids.py;
HU <-> the network's units: units.py; ControlNet inputs: controls.py; the preparation every task runs
before sampling: prepare.py.)"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .. import ctio
from ..device import resolve_device
from ..errors import InputError
from ..modelfiles import ModelCard, load_controlnet, load_network
from ..regions import hu_to_unit
from ..schedules import ScheduleConfig, alphas_cumprod
from ..settings.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES  # noqa: F401 (the default models)


@dataclass
class LoadedModel:
    net: torch.nn.Module  # MedDiffFMNet, or a ControlledDenoiser when a ControlNet is loaded
    card: ModelCard  # the base model's card (working spacing, schedule)
    device: torch.device
    alphas_cumprod: torch.Tensor
    controlnet_card: ModelCard | None = None
    # What builds the whole-volume noise estimate (tasks.prepare); None: sampling.SlidingWindowEstimator.
    # Benchmarks and tests hand another here (a counting one, MONAI's sliding window) instead of patching.
    estimator: Callable | None = None


def load_model(model: str, device: str = "auto", controlnet: str | None = None,
               estimator: Callable | None = None) -> LoadedModel:
    """The base denoiser (by name or card path), optionally with a task ControlNet trained on it; the
    tasks estimate noise with `estimator` (default: sampling.SlidingWindowEstimator)."""
    torch_device = resolve_device(device)
    net, card = load_network(model, torch_device)
    control_card = None
    if controlnet is not None:
        from ..controlnet import ControlledDenoiser

        control, control_card = load_controlnet(controlnet, net, card, torch_device)
        net = ControlledDenoiser(net, control).eval()
    return LoadedModel(net, card, torch_device, alphas_cumprod(ScheduleConfig(**card.schedule)), control_card,
                       estimator)


def require_controlnet(model: LoadedModel, task: str) -> None:
    card = model.controlnet_card
    if card is None or (card.control or {}).get("task") != task:
        what = "no ControlNet" if card is None else f"ControlNet {card.name!r} (task {(card.control or {}).get('task')!r})"
        raise InputError(f"this task needs a {task!r} ControlNet, got {what}; pass --controlnet with a {task} ControlNet")


def read_anatomy(path: str | os.PathLike | sitk.Image | None, grid: sitk.Image, bits: int) -> torch.Tensor | None:
    """An organ label map (anatomy condition; a file, or an image already read) resampled
    nearest-neighbour onto grid, as (D, H, W) int64."""
    if path is None:
        return None
    labels = path if isinstance(path, sitk.Image) else ctio.read_label_map(path)
    top = int(sitk.GetArrayViewFromImage(labels).max())
    if top >= 2**bits:
        raise InputError(
            f"{path}: anatomy label {top} is beyond this model's vocabulary (0..{2**bits - 1}); "
            "pass a TotalSegmentator label map (0 background, 1-117 organs, 118 body)"
        )
    on_grid = ctio.resample_onto(labels, grid, "nearest", 0)
    return torch.from_numpy(sitk.GetArrayFromImage(on_grid).astype(np.int64))


def crop_box(mask: np.ndarray, margin: int, minimum: int) -> tuple[slice, slice, slice]:
    """A (z, y, x) box around the mask's voxels, widened by `margin` voxels and to at least `minimum`
    voxels per axis (as far as the volume allows): the context a window around a lesion needs."""
    where = np.argwhere(mask)
    lo, hi = where.min(axis=0), where.max(axis=0) + 1
    box = []
    for a, b, n in zip(lo, hi, mask.shape):
        a, b = max(0, a - margin), min(n, b + margin)
        short = minimum - (b - a)
        if short > 0:
            a = max(0, a - (short + 1) // 2)
            b = min(n, a + minimum)
            a = max(0, b - minimum)
        box.append(slice(int(a), int(b)))
    return tuple(box)


# ----------------------------------------------------------------------------------------- skipping air windows
# --skip-air (denoise, superres, anomaly): sliding windows lying wholly outside the body are not run
# through the network; there the sampler's clean-image estimate is air (sampling.Conditions.active).

AIR_HU = -1000.0
# Halfway between air (-1000 HU) and fat (about -100 HU), the least dense tissue on the skin.
BODY_THRESHOLD_HU = -500.0
# Gaussian sigma in voxels before thresholding: low-dose noise in air can reach a few hundred HU per
# voxel; a sigma of one voxel divides white noise by about 6.7 in 3D (300 HU -> 45 HU, ten standard
# deviations below the threshold's 500 HU distance from air) and moves the skin edge by under a voxel.
BODY_SMOOTH_VOXELS = 1.0
# Voxels added around the body: windows that reach within this distance of the skin still run, so the
# analytic air estimate starts a few voxels away from it, clear of the skin's partial-volume blur, and
# the network's own estimate covers the air right next to the skin.
BODY_MARGIN_VOXELS = 3


def body_mask(image: sitk.Image | np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU,
              smooth_voxels: float = BODY_SMOOTH_VOXELS, margin_voxels: int = BODY_MARGIN_VOXELS) -> np.ndarray:
    """The voxels (bool, (z, y, x)) where the body is, or might be, in a CT in HU: lightly smoothed, above
    `threshold_hu`, with the air inside it filled (lungs, airways and bowel gas are enclosed by the body
    in the slices across at least one axis; the trachea opens the lungs to the outside in 3D only
    through the volume's border, so slice-wise filling is what catches them), then grown by
    `margin_voxels`. Everything else is air (or the padding outside a scanner's field of view)."""
    hu = ctio.to_array(image) if isinstance(image, sitk.Image) else np.asarray(image, dtype=np.float32)
    if smooth_voxels > 0:
        hu = ndimage.gaussian_filter(hu, smooth_voxels, mode="nearest")
    body = hu > threshold_hu
    cross = ndimage.generate_binary_structure(2, 1)
    filled = body.copy()
    for axis in range(3):
        # A structure flat along `axis` fills holes slice by slice across that axis.
        filled |= ndimage.binary_fill_holes(body, structure=np.expand_dims(cross, axis))
    if margin_voxels > 0 and filled.any():
        filled = ndimage.binary_dilation(filled, ndimage.generate_binary_structure(3, 1), iterations=int(margin_voxels))
    return filled


def air_value(region: str) -> float:
    """Air (-1000 HU) in the region's [-1, 1] window: -1 for the clipped head-and-neck and abdomen
    windows, about -0.56 for the chest window [-1400, 400]."""
    return float(hu_to_unit(np.float32(AIR_HU), region))


def air_skip(hu_on_grid: sitk.Image | np.ndarray | None, region: str) -> dict:
    """Conditions fields for --skip-air (`active`, `inactive_value`) from the task's input in HU on the
    working grid; none (every window runs) when hu_on_grid is None."""
    if hu_on_grid is None:
        return {}
    return {"active": torch.from_numpy(body_mask(hu_on_grid)), "inactive_value": air_value(region)}


def window_report(progress, estimator) -> None:
    """Say how many windows the network evaluates per step, when some are skipped."""
    if estimator.active_windows < len(estimator):
        progress.note("windows", f"{estimator.active_windows} of {len(estimator)} windows per step need the network")


# ----------------------------------------------------------------------------------------- paths


def check_outputs(input_path: str | os.PathLike | None, outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse an output that would overwrite the input, or two outputs on one path."""
    given = {k: v for k, v in outputs.items() if v is not None}
    if input_path is not None:
        for key, path in given.items():
            if ctio.same_path(path, input_path):
                raise InputError(
                    f"the output {path} is the input file; the input is never overwritten, choose another output path"
                )
    paths = list(given.items())
    for i, (k1, p1) in enumerate(paths):
        for k2, p2 in paths[i + 1 :]:
            if Path(p1).expanduser().resolve() == Path(p2).expanduser().resolve():
                raise InputError(f"the {k1} and {k2} outputs are the same file {p1}; give different paths")


def check_positive(**values) -> None:
    for name, value in values.items():
        if value is not None and not value >= 1:
            raise InputError(f"{name} must be at least 1, got {value}")


# A change smaller than this is rounding (integer outputs, float32 round trips), not a change.
CHANGE_HU = 0.5


def report_change(progress, before: sitk.Image, after: sitk.Image) -> None:
    """How much a task changed the input, as a note: on the terminal (the bar's mode) and in --progress
    json, so that an output that barely changed (or changed everywhere) does not pass unseen."""
    difference = np.abs(ctio.to_array(after).astype(np.float64) - ctio.to_array(before))
    changed = difference > CHANGE_HU
    mean = float(difference[changed].mean()) if changed.any() else 0.0
    progress.note("changed", f"{changed.mean():.1%} of the voxels changed by more than {CHANGE_HU:g} HU "
                             f"(mean change there {mean:.1f} HU, largest {float(difference.max()):.0f} HU)")
