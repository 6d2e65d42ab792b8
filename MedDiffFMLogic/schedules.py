"""The paper's diffusion setup on MONAI's schedulers: T = 1000, cosine schedule, epsilon prediction.

Schedulers are kept apart from the model (as in MONAI and diffusers): training uses `add_noise`, and
the samplers in sampling.py read `alphas_cumprod` so that they can step between any two timesteps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler


@dataclass(frozen=True)
class ScheduleConfig:
    num_train_timesteps: int = 1000
    schedule: str = "cosine"
    prediction_type: str = "epsilon"


PAPER_SCHEDULE = ScheduleConfig()


def make_ddpm(config: ScheduleConfig = PAPER_SCHEDULE) -> DDPMScheduler:
    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        schedule=config.schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
    )


def make_ddim(config: ScheduleConfig = PAPER_SCHEDULE) -> DDIMScheduler:
    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        schedule=config.schedule,
        prediction_type=config.prediction_type,
        clip_sample=True,
    )


def alphas_cumprod(config: ScheduleConfig = PAPER_SCHEDULE) -> torch.Tensor:
    """alpha_bar_t for t = 0 .. T-1 (float64 on the CPU, for exact arithmetic in the samplers)."""
    return make_ddpm(config).alphas_cumprod.double()


def timestep_for_noise_level(sigma: float, config: ScheduleConfig = PAPER_SCHEDULE) -> int:
    """The timestep whose noise-to-signal ratio sqrt((1 - a_t) / a_t) is closest to sigma.

    A clean image plus Gaussian noise of std sigma, scaled by sqrt(a_t), is distributed as x_t;
    this is how DiffPIR picks its starting step from the measurement noise level.
    """
    a = alphas_cumprod(config)
    ratio = torch.sqrt((1 - a) / a)
    return int(torch.argmin(torch.abs(ratio - sigma)).item())
