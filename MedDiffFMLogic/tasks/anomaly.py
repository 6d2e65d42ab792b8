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
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import ctio
from ..algorithms import reconstruct
from ..errors import InputError
from ..progress import SILENT, Progress
from ..regions import HU_WINDOWS, check_region
from ..sampling import WindowConfig
from .common import DEFAULT_MODEL, LoadedModel, add_model_options, check_outputs, check_positive, load_model
from .prepare import prepare_task
from .masks import parse_labels, read_roi

PAPER_T_START = 950


@dataclass(frozen=True)
class AnomalyConfig:
    region: str = "chest"
    t_start: int = PAPER_T_START  # diffuse to this timestep (paper: 950)
    steps: int = 25  # DDIM steps from t_start back to 0
    seeds: int = 1  # reconstructions averaged (seeds seed, seed + 1, ...)
    threshold: float | None = None  # HU on the map; None: median + k_mad * 1.4826 * MAD inside the ROI
    k_mad: float = 6.0
    smooth_mm: float = 2.0  # Gaussian sigma of the map in mm (0: none)
    roi: str | None = None  # label map restricting the map (any grid overlapping the image)
    roi_labels: tuple[int, ...] | None = None  # which labels of the ROI map (None: every non-zero label)
    anatomy: str | None = None  # organ label map (anatomy condition)
    skip_air: bool = False  # do not run the network on windows wholly outside the body (reconstructed as air)
    model: str = DEFAULT_MODEL
    windows: WindowConfig = field(default_factory=WindowConfig)
    seed: int = 0
    device: str = "auto"


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
    check_region(config.region)
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
    low, high = HU_WINDOWS[config.region]
    seen = np.clip(ctio.to_array(image if native else ctio.resample_onto(work, image, "linear")), low, high)
    h = ctio.to_array(healthy)
    residual = np.abs(seen - h)
    if config.smooth_mm > 0:
        sigma = [config.smooth_mm / s for s in reversed(image.GetSpacing())]  # (z, y, x) voxels
        residual = ndimage.gaussian_filter(residual, sigma, mode="nearest")
    if roi is not None:
        residual[~roi] = 0.0
    inside = residual[roi] if roi is not None else residual.ravel()
    if config.threshold is not None:
        threshold = float(config.threshold)
    else:
        median = float(np.median(inside))
        mad = float(np.median(np.abs(inside - median)))
        # A floor of 1 HU keeps a perfectly reconstructed (flat) map from flagging rounding noise.
        threshold = max(median + config.k_mad * 1.4826 * mad, 1.0)
    mask = residual > threshold
    score = float(inside.max())
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
    progress.start("write", 1, f"threshold {result.threshold:.1f} HU, score {result.score:.1f} HU")
    written = {"map": str(ctio.write_image(result.map, output))}
    if mask_out is not None:
        written["mask"] = str(ctio.write_image(result.mask, mask_out))
    if healthy_out is not None:
        written["healthy"] = str(ctio.write_image(result.healthy, healthy_out))
    progress.step(1)
    return written


def add_command(subparsers) -> None:
    from ..cli_args import add_common, add_windows

    p = subparsers.add_parser("anomaly", help="zero-shot anomaly map: residual against a pseudo-healthy reconstruction")
    p.add_argument("input", help="the CT (file or DICOM folder); never modified")
    p.add_argument("-o", "--output", required=True, help="anomaly map in HU (float, input's grid)")
    p.add_argument("--mask-out", help="also write the thresholded map (uint8, input's grid)")
    p.add_argument("--healthy-out", help="also write the pseudo-healthy reconstruction (HU, input's grid)")
    p.add_argument("--threshold", type=float, default=None,
                   help="HU threshold for --mask-out (default: median + 6 x 1.4826 x MAD of the map in the ROI)")
    p.add_argument("--roi", help="label map restricting the map (e.g. an organ segmentation; any grid overlapping the CT), "
                   "or labels of the --anatomy map (numbers or TotalSegmentator names, comma separated)")
    p.add_argument("--roi-labels", help="labels of --roi to use: numbers or TotalSegmentator names, comma separated "
                   "(default: every non-zero label)")
    add_model_options(p)
    p.add_argument("--t-start", type=int, default=PAPER_T_START, help=f"diffuse to this timestep (default {PAPER_T_START}, the paper's)")
    p.add_argument("--steps", type=int, default=AnomalyConfig.steps, help=f"DDIM steps back to 0 (default {AnomalyConfig.steps})")
    p.add_argument("--seeds", type=int, default=1, help="reconstructions to average (default 1)")
    p.add_argument("--smooth", type=float, default=AnomalyConfig.smooth_mm, help="Gaussian smoothing of the map in mm (default 2)")
    add_windows(p, skip_air=True)
    add_common(p)
    p.set_defaults(run=_run_from_args)


def _run_from_args(args, progress: Progress) -> dict[str, str]:
    from ..cli_args import window_config

    if args.roi_labels is not None and args.roi is None:
        raise InputError("--roi-labels needs --roi, the label map they refer to")
    roi, labels = args.roi, parse_labels(args.roi_labels)
    if roi is not None and not os.path.exists(roi):
        # `--roi liver` or `--roi 5,6`: labels of the organ map given with --anatomy.
        if args.anatomy is None:
            raise InputError(
                f"--roi {roi}: no such file; give a label-map file, or label names or numbers together with "
                "--anatomy (the organ label map they refer to)"
            )
        roi, labels = args.anatomy, parse_labels(roi)
    config = AnomalyConfig(
        region=args.region, t_start=args.t_start, steps=args.steps, seeds=args.seeds, threshold=args.threshold,
        smooth_mm=args.smooth, roi=roi, roi_labels=tuple(labels) if labels else None, anatomy=args.anatomy,
        skip_air=args.skip_air, model=args.model, windows=window_config(args), seed=args.seed, device=args.device,
    )
    return run(config, args.input, args.output, args.mask_out, args.healthy_out, progress)
