"""The paper's training objective: L1 between the true and the predicted noise, with conditions
dropped at random so that the model also runs without them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler

from ..network import ABSENT_ANATOMY, UNKNOWN_REGION_INDEX, MedDiffFMNet


@dataclass
class Batch:
    """image: (N, 1, D, H, W) in [-1, 1]; region: (N,) class indices; anatomy: (N, D, H, W) labels or
    None; coords: (N, 3, D, H, W) whole-volume coordinates or None; control: (N, C, D, H, W) a
    ControlNet's task condition (low-resolution volume, lesion mask) or None."""

    image: torch.Tensor
    region: torch.Tensor
    anatomy: torch.Tensor | None = None
    coords: torch.Tensor | None = None
    control: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "Batch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(move(self.image), move(self.region), move(self.anatomy), move(self.coords), move(self.control))


def apply_dropout(batch: Batch, keep_region: torch.Tensor, keep_anatomy: torch.Tensor,
                  keep_coords: torch.Tensor) -> Batch:
    """Replace each condition by 'absent' where its (N,) boolean keep flag is False. The control volume
    of a ControlNet is never dropped: it is the task's input, not an optional condition."""
    n = batch.image.shape[0]
    device = batch.image.device
    region = torch.where(keep_region.to(device), batch.region, torch.full_like(batch.region, UNKNOWN_REGION_INDEX))
    anatomy = batch.anatomy
    if anatomy is not None:
        # Label 0 is background, not "absent": dropped samples get ABSENT_ANATOMY (zero bit-planes).
        anatomy = torch.where(keep_anatomy.to(device).view(n, 1, 1, 1), anatomy, torch.full_like(anatomy, ABSENT_ANATOMY))
    coords = batch.coords
    if coords is not None:
        # NaN, not 0: the network encodes NaN as zero channels (absent), while 0 is a real position.
        coords = torch.where(keep_coords.to(device).view(n, 1, 1, 1, 1), coords, torch.full_like(coords, float("nan")))
    return Batch(batch.image, region, anatomy, coords, batch.control)


def drop_conditions(batch: Batch, probability: float, generator: torch.Generator | None = None) -> Batch:
    """Independently per sample and per condition, replace the condition by 'absent' with `probability`."""
    if probability <= 0:
        return batch
    n = batch.image.shape[0]

    def keep() -> torch.Tensor:
        return torch.rand(n, generator=generator, device=generator.device if generator else "cpu") >= probability

    return apply_dropout(batch, keep(), keep(), keep())


def epsilon_loss(net: torch.nn.Module, scheduler: DDPMScheduler, batch: Batch, noise: torch.Tensor,
                 timesteps: torch.Tensor) -> torch.Tensor:
    """L1(eps, eps_theta(x_t, t | conditions)) for given noise and timesteps; the loss is taken in fp32
    even when the network runs in reduced precision."""
    noisy = scheduler.add_noise(batch.image, noise, timesteps)
    extra = {} if batch.control is None else {"control": batch.control}
    pred = net(noisy, timesteps, region=batch.region, anatomy=batch.anatomy, coords=batch.coords, **extra)
    return F.l1_loss(pred.float(), noise.float())


def diffusion_loss(
    net: MedDiffFMNet,
    scheduler: DDPMScheduler,
    batch: Batch,
    generator: torch.Generator | None = None,
    condition_dropout: float = 0.0,
) -> torch.Tensor:
    """L1(eps, eps_theta(x_t, t | conditions)) with t uniform over the training timesteps."""
    batch = drop_conditions(batch, condition_dropout, generator)
    n, device = batch.image.shape[0], batch.image.device
    gen_device = generator.device if generator is not None else device
    noise = torch.randn(batch.image.shape, generator=generator, device=gen_device).to(device)
    timesteps = torch.randint(
        0, scheduler.num_train_timesteps, (n,), generator=generator, device=gen_device
    ).to(device)
    return epsilon_loss(net, scheduler, batch, noise, timesteps)
