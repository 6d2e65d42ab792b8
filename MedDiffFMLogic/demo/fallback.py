"""The demo's fallback when the bundled models are missing (a checkout before the training issue's
models, or a broken install): a tiny model fitted to the demo's phantom on the spot (`train_steps` Adam
steps at 4 mm, a miniature of the paper's multi-level inputs) and untrained ControlNets (zero output
convolutions: the base model alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..controlnet import ControlNetConfig, MedDiffFMControlNet
from ..device import resolve_device
from ..errors import ModelFileError
from ..modelfiles import find_model, load_network, save_model
from ..network import TINY, MedDiffFMNet, coordinate_grid, whole_volume_axes
from ..progress import Progress
from ..regions import region_index
from ..schedules import make_ddpm
from ..settings.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES
from ..settings.demo import DemoConfig
from ..training.objective import Batch, diffusion_loss
from ..units import window_to_unit

DEMO_SPACING = (4.0, 4.0, 4.0)  # the fallback model's grid: its 32^3 window then sees a whole chest


def bundled_models() -> dict[str, Path] | None:
    """Card paths of the default base model and its two ControlNets, or None when any is missing."""
    try:
        return {"base": find_model(DEFAULT_MODEL), "lesion": find_model(DEFAULT_LESION),
                "superres": find_model(DEFAULT_SUPERRES)}
    except ModelFileError:
        return None


def fallback_models(phantom, config: DemoConfig, folder: Path, progress: Progress) -> dict[str, Path]:
    base_card = _fit_tiny_model(phantom, config, folder, progress)
    base, card = load_network(base_card)
    models = {"base": base_card}
    for task in ("lesion", "superres"):
        net = MedDiffFMControlNet.from_base(base, ControlNetConfig(task=task))
        models[task] = save_model(
            net, folder, name=f"demo-tiny-{task}-untrained", kind="controlnet", architecture=card.architecture,
            working_spacing=card.working_spacing, base_model=card.name, control=net.config.to_dict(),
            description=f"Untrained {task} ControlNet (zero output convolutions: the base model alone), "
                        "made by `meddifffm demo` when the bundled models are missing.",
        )
    return models


def _fit_tiny_model(phantom, config: DemoConfig, folder: Path, progress: Progress) -> Path:
    """Fit the tiny model to the phantom at 4 mm: native 32^3 crops and the whole volume resized to
    32^3, each with its whole-volume coordinates (a miniature of the paper's multi-level inputs)."""
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    image = ctio.resample_to_spacing(phantom.image, DEMO_SPACING)
    labels = ctio.resample_onto(phantom.labels, image, "nearest", 0)
    volume = torch.from_numpy(window_to_unit(image, "chest"))
    anatomy = torch.from_numpy(sitk.GetArrayFromImage(labels).astype(np.int64))
    coords = coordinate_grid(whole_volume_axes(volume.shape))[0]
    edge = TINY.window_size
    whole = Batch(
        image=torch.nn.functional.interpolate(volume[None, None], size=(edge,) * 3, mode="trilinear"),
        region=torch.tensor([region_index("chest")]),
        anatomy=torch.nn.functional.interpolate(anatomy[None, None].float(), size=(edge,) * 3, mode="nearest")[0].long(),
        coords=torch.nn.functional.interpolate(coords[None], size=(edge,) * 3, mode="trilinear", align_corners=True),
    )
    net = MedDiffFMNet(TINY).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    scheduler = make_ddpm()
    generator = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    losses = []
    progress.start("fit demo model", config.train_steps)
    for step in range(config.train_steps):
        if step % 2 == 0:
            batch = whole
        else:
            z, y, x = (int(rng.integers(0, max(n - edge, 0) + 1)) for n in volume.shape)
            box = (slice(z, z + edge), slice(y, y + edge), slice(x, x + edge))
            batch = Batch(volume[box][None, None], torch.tensor([region_index("chest")]),
                          anatomy[box][None], coords[(slice(None), *box)][None])
        loss = diffusion_loss(net, scheduler, batch.to(device), generator, condition_dropout=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.step(step + 1, f"loss {np.mean(losses[-10:]):.3f}")
    return save_model(
        net, folder, name="demo-tiny", kind="base", architecture=TINY.to_dict(),
        working_spacing=DEMO_SPACING,
        description="Tiny model fitted by `meddifffm demo` to one procedural chest phantom (bundled models missing).",
        provenance={
            "trained_on": "one procedural chest phantom (MedDiffFMLogic.phantoms), seed %d" % config.seed,
            "steps": config.train_steps, "optimizer": "Adam 1e-3", "batch": 1,
            "command": f"meddifffm demo --train-steps {config.train_steps} --seed {config.seed}",
            "final_loss_mean_last_10": round(float(np.mean(losses[-10:])), 4),
        },
    )
