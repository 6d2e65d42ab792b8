"""Whole-volume synthesis: sample a CT of a region from noise with the sliding-window sampler,
optionally following an organ label map (the anatomy condition)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from .. import ctio
from ..errors import InputError
from ..progress import SILENT, Progress
from ..grids import centred_grid
from ..regions import check_region
from ..sampling import WindowConfig, make_generator, sample, spaced_timesteps
from .common import DEFAULT_MODEL, add_model_options, load_model
from .prepare import prepare_task


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


def run(config: SynthesizeConfig, output: str | os.PathLike, progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_region(config.region)
    if config.anatomy is None and any(int(s) < 1 for s in config.size):
        raise InputError(f"--size must be positive voxel counts, got {config.size}")
    model = load_model(config.model, config.device, estimator=estimator)
    if config.anatomy is not None:
        labels = ctio.read_label_map(config.anatomy)
        target = labels
    else:
        labels = None
        target = centred_grid(config.size, config.spacing or model.card.working_spacing)
    # Sample on the model's working grid over the same physical extent, then resample onto the target.
    prepared = prepare_task(model, config.region, config.windows, target=target, exact_grid=True, anatomy=labels,
                            progress=progress)
    generator = make_generator(config.seed, "cpu")
    x = torch.randn((1, 1, *prepared.shape), generator=generator).to(model.device)
    x0 = sample(
        prepared.estimator, model.alphas_cumprod, x, spaced_timesteps(config.steps),
        eta=config.eta, generator=generator, progress=progress, stage="synthesize",
    )
    image = prepared.result(x0)
    path = ctio.write_image(image, output)
    return {"image": str(path)}


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
