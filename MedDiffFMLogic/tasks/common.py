"""What every task shares: the default model, loading it on a device, and the working grid."""

from __future__ import annotations

from dataclasses import dataclass

import SimpleITK as sitk
import torch

from ..device import resolve_device
from ..modelfiles import ModelCard, load_network
from ..network import MedDiffFMNet
from ..schedules import ScheduleConfig, alphas_cumprod

DEFAULT_MODEL = "meddifffm-base-demo"


@dataclass
class LoadedModel:
    net: MedDiffFMNet
    card: ModelCard
    device: torch.device
    alphas_cumprod: torch.Tensor


def load_model(model: str, device: str = "auto") -> LoadedModel:
    torch_device = resolve_device(device)
    net, card = load_network(model, torch_device)
    return LoadedModel(net, card, torch_device, alphas_cumprod(ScheduleConfig(**card.schedule)))


def centred_grid(size: tuple[int, int, int], spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty float32 image of `size` (x, y, z) voxels centred on the physical origin."""
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([-(n - 1) * s / 2.0 for n, s in zip(size, spacing)])
    return image
