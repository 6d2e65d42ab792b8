"""Zero-shot anomaly maps (the paper's method): diffuse the scan to a high timestep (t = 950), let the
pretrained model denoise it back into a pseudo-healthy image, and take the residual.

- The input y is windowed to the region's HU range and, when its spacing differs from the model's
  working spacing by more than 30% (grids.NATIVE_TOLERANCE), resampled (linearly) onto the working grid.
- `algorithms.reconstruct` diffuses y to x_t = sqrt(a_t) y + sqrt(1 - a_t) z at t = `t_start` and runs
  `steps` DDIM steps back to 0; with several `seeds` the reconstructions are averaged (the average of
  independent trajectories is a steadier estimate of the healthy image, and the residual's noise falls).
- Map (HU, input grid): |y' - h|, where y' is the windowed input and h the pseudo-healthy image, both on
  the input grid; for resampled runs y' is the input round-tripped through the working grid, so detail
  finer than that grid, which the model never saw, is not mistaken for an anomaly. The map is then
  smoothed by a Gaussian of `smooth_mm` (per-voxel noise is independent, lesions are not) and set to 0
  outside the region of interest.
- Mask: map > threshold. The default threshold is robust and per scan: median + `k_mad` x 1.4826 x MAD
  of the map inside the region of interest (the whole image when no ROI is given): most voxels are
  reconstructed to within the noise, so the bulk of the map measures the noise and outliers are lesions.
- Air (--skip-air, off by default): windows wholly outside the body (`common.body_mask` of the input
  on the working grid) are not run through the network and reconstruct as air (-1000 HU). Faster on
  scans with much air around the body; the map changes slightly in the air only.
- Score (image level): the maximum of the smoothed map inside the ROI (a small lesion covers far less
  than any fixed percentile of an organ; the smoothing keeps single noisy voxels from deciding it).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import ctio
from ..algorithms import reconstruct
from ..errors import InputError
from ..progress import SILENT, Progress
from ..settings.anomaly import PAPER_T_START, AnomalyConfig  # noqa: F401 (the task's config, declared with its settings)
from ..regions import HU_WINDOWS, check_region
from .common import LoadedModel, check_outputs, check_positive, load_model
from .prepare import prepare_task
from .masks import read_roi

@dataclass
class AnomalyResult:
    map: sitk.Image  # float32 HU residual on the input grid, 0 outside the ROI
    mask: sitk.Image  # uint8, map > threshold
    healthy: sitk.Image  # float32 HU pseudo-healthy image on the input grid
    threshold: float
    score: float  # image-level anomaly score: maximum of the smoothed map in the ROI
    native_grid: bool


def anomaly_map(image: sitk.Image, config: AnomalyConfig, model: LoadedModel,
                roi: np.ndarray | None = None, progress: Progress = SILENT) -> AnomalyResult:
    """The anomaly map, mask and pseudo-healthy image of `image`, on its exact grid. roi: (z, y, x)
    bool on the input grid (None: the whole image)."""
    check_region(config.region, auto=True)
    check_positive(steps=config.steps, seeds=config.seeds)
    if not 0 < config.t_start < len(model.alphas_cumprod):
        raise InputError(f"--t-start must lie in 1..{len(model.alphas_cumprod) - 1}, got {config.t_start}")
    if config.smooth_mm < 0:
        raise InputError(f"--smooth must be 0 or more mm, got {config.smooth_mm}")
    if config.threshold is not None and not config.threshold > 0:
        raise InputError(f"--threshold must be a positive number of HU, got {config.threshold}")
    prepared = prepare_task(model, config.region, config.windows, image=image, anatomy=config.anatomy,
                            skip_air=config.skip_air, progress=progress)
    work, native = prepared.work, prepared.native
    seeds = [config.seed + k for k in range(config.seeds)]
    x = reconstruct(prepared.estimator, model.alphas_cumprod, prepared.y, config.t_start, config.steps, seeds,
                    progress=progress, stage="anomaly")
    healthy = prepared.result(x)
    low, high = HU_WINDOWS[prepared.region]
    seen = np.clip(ctio.to_array(image if native else ctio.resample_onto(work, image, "linear")), low, high)
    h = ctio.to_array(healthy)
    residual = np.abs(seen - h)
    if config.smooth_mm > 0:
        sigma = [config.smooth_mm / s for s in reversed(image.GetSpacing())]  # (z, y, x) voxels
        residual = ndimage.gaussian_filter(residual, sigma, mode="nearest")
    if roi is not None:
        residual[~roi] = 0.0
    inside = residual[roi] if roi is not None else residual.ravel()
    median = float(np.median(inside))
    mad = float(np.median(np.abs(inside - median)))
    # A floor of 1 HU keeps a perfectly reconstructed (flat) map from flagging rounding noise.
    automatic = max(median + config.k_mad * 1.4826 * mad, 1.0)
    threshold = float(config.threshold) if config.threshold is not None else automatic
    mask = residual > threshold
    score = float(inside.max())
    if not mask.any() and score > automatic:
        # A given threshold above every value of a map that does stand out: an empty mask that looks
        # like "nothing found" would be a silent wrong answer.
        warnings.warn(f"the anomaly mask is empty: --threshold {threshold:g} HU is above the whole map, which "
                      f"reaches {score:.1f} HU (the automatic threshold would be {automatic:.1f} HU); "
                      "lower --threshold or leave it out")
    # Where the input lies beyond the window (bone in a soft-tissue window) the model cannot say
    # anything: the healthy image keeps the input there.
    original = ctio.to_array(image)
    h = np.where((original < low) | (original > high), original, h).astype(np.float32)
    return AnomalyResult(
        map=ctio.from_array(residual.astype(np.float32), image),
        mask=ctio.from_array(mask.astype(np.uint8), image),
        healthy=ctio.from_array(h, image),
        threshold=threshold, score=score, native_grid=native,
    )


def run(config: AnomalyConfig, input: str | os.PathLike, output: str | os.PathLike,
        mask_out: str | os.PathLike | None = None, healthy_out: str | os.PathLike | None = None,
        progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    outputs = {"output": output, "mask": mask_out, "healthy image": healthy_out}
    check_outputs(input, outputs)
    if config.roi is not None:
        check_outputs(config.roi, outputs)
    image = ctio.read_ct(input)
    roi = None
    if config.roi is not None:
        roi = read_roi(config.roi, image, list(config.roi_labels) if config.roi_labels else None)
    model = load_model(config.model, config.device, estimator=estimator)
    result = anomaly_map(image, config, model, roi, progress)
    flagged = int(sitk.GetArrayViewFromImage(result.mask).sum())
    how = "given" if config.threshold is not None else f"median + {config.k_mad:g} x 1.4826 MAD of the map"
    progress.note("anomaly", f"score {result.score:.1f} HU (the map's largest value{' in the ROI' if roi is not None else ''}); "
                             f"threshold {result.threshold:.1f} HU ({how}); {flagged} voxels above it")
    progress.start("write", 1, f"threshold {result.threshold:.1f} HU, score {result.score:.1f} HU")
    written = {"map": str(ctio.write_image(result.map, output))}
    if mask_out is not None:
        written["mask"] = str(ctio.write_image(result.mask, mask_out))
    if healthy_out is not None:
        written["healthy"] = str(ctio.write_image(result.healthy, healthy_out))
    progress.step(1)
    return written
