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
from ..regions import AUTO_REGION, check_region
from ..sampling import make_generator, sample, spaced_timesteps
from .common import load_model
from .prepare import prepare_task

# The region synthesized when neither --region nor --anatomy says which.
UNGUIDED_REGION = "chest"


def run(config: SynthesizeConfig, output: str | os.PathLike, progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_region(config.region, auto=True)
    region = config.region
    if region == AUTO_REGION and config.anatomy is None:
        # nothing to detect a region from: synthesis is a request, so `auto` is the usual one, said aloud
        # (with a label map, prepare_task reads the region off it)
        region = UNGUIDED_REGION
        progress.note("region", f"{region} (no --anatomy label map to detect a region from; pass --region to choose)")
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
    prepared = prepare_task(model, region, config.windows, target=target, exact_grid=True, anatomy=labels,
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
