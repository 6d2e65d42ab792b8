"""Whole-volume synthesis: sample a CT of a region from noise with the sliding-window sampler,
optionally following an organ label map (the anatomy condition)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..errors import InputError
from ..progress import SILENT, Progress
from ..regions import check_region, region_index
from ..sampling import Conditions, SlidingWindowEstimator, WindowConfig, make_generator, sample, spaced_timesteps
from .common import DEFAULT_MODEL, add_model_options, centred_grid, load_model


@dataclass(frozen=True)
class SynthesizeConfig:
    region: str = "chest"
    size: tuple[int, int, int] = (64, 64, 64)  # voxels along x, y, z; ignored when anatomy is given
    spacing: tuple[float, float, float] | None = None  # mm; None: the model's working spacing
    anatomy: str | None = None  # label-map file; its grid becomes the output grid
    model: str = DEFAULT_MODEL
    steps: int = 50
    eta: float = 0.0
    windows: WindowConfig = field(default_factory=WindowConfig)
    seed: int = 0
    device: str = "auto"


def run(config: SynthesizeConfig, output: str | os.PathLike, progress: Progress = SILENT) -> dict[str, str]:
    check_region(config.region)
    if config.anatomy is None and any(int(s) < 1 for s in config.size):
        raise InputError(f"--size must be positive voxel counts, got {config.size}")
    model = load_model(config.model, config.device)
    working_spacing = model.card.working_spacing
    if config.anatomy is not None:
        labels = ctio.read_label_map(config.anatomy)
        target = labels
    else:
        labels = None
        target = centred_grid(config.size, config.spacing or working_spacing)
    # Sample on the model's working grid over the same physical extent, then resample onto the target.
    work = target if _close(target.GetSpacing(), working_spacing) else ctio.resample_to_spacing(target, working_spacing)
    anatomy = None
    if labels is not None:
        on_work = labels if work is target else ctio.resample_onto(labels, work, "nearest", 0)
        anatomy = torch.from_numpy(sitk.GetArrayFromImage(on_work).astype(np.int64))
    shape = tuple(reversed(work.GetSize()))
    estimator = SlidingWindowEstimator(
        model.net, shape, Conditions(region=region_index(config.region), anatomy=anatomy),
        config.windows, model.device,
    )
    generator = make_generator(config.seed, "cpu")
    x = torch.randn((1, 1, *shape), generator=generator).to(model.device)
    x0 = sample(
        estimator, model.alphas_cumprod, x, spaced_timesteps(config.steps),
        eta=config.eta, generator=generator, progress=progress, stage="synthesize",
    )
    image = ctio.unit_to_image(x0[0, 0].cpu().numpy(), work, config.region)
    if work is not target:
        image = ctio.resample_onto(image, target, "linear")
    path = ctio.write_image(image, output)
    return {"image": str(path)}


def _close(a, b, tol: float = 1e-6) -> bool:
    return all(abs(float(x) - float(y)) <= tol for x, y in zip(a, b))


def add_command(subparsers) -> None:
    from ..cli_args import add_common, add_windows, triple

    p = subparsers.add_parser("synthesize", help="sample a whole CT volume of a region")
    p.add_argument("-o", "--output", required=True)
    add_model_options(p, anatomy_help="organ label map to follow; its grid becomes the output grid")
    p.add_argument("--size", type=triple(int), default=(64, 64, 64), help="voxels X,Y,Z (default 64,64,64)")
    p.add_argument("--spacing", type=triple(float), default=None, help="mm X,Y,Z (default: the model's)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps (default 50)")
    add_windows(p)
    add_common(p)
    p.set_defaults(run=_run_from_args)


def _run_from_args(args, progress: Progress) -> dict[str, str]:
    from ..cli_args import window_config

    config = SynthesizeConfig(
        region=args.region, size=args.size, spacing=args.spacing, anatomy=args.anatomy, model=args.model,
        steps=args.steps, windows=window_config(args), seed=args.seed, device=args.device,
    )
    return run(config, args.output, progress)
