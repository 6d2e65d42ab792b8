"""Whole-volume synthesis: sample a CT of a region from noise with the sliding-window sampler,
optionally following an organ label map (the anatomy condition)."""

from __future__ import annotations

import os

import torch

from .. import ctio
from ..errors import InputError
from ..progress import SILENT, Progress
from ..settings.synthesize import SynthesizeConfig  # noqa: F401 (the task's config, declared with its settings)
from ..grids import centred_grid
from ..regiondetect import NO_SCAN
from ..regions import AUTO_REGION, check_region
from ..sampling import make_generator, sample, spaced_timesteps
from .common import load_model
from .prepare import prepare_task


def run(config: SynthesizeConfig, output: str | os.PathLike, progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_region(config.region, auto=True)
    if config.region == AUTO_REGION and config.anatomy is None:
        raise InputError(NO_SCAN)  # before the model loads; with a label map, prepare_task reads the region off it
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
