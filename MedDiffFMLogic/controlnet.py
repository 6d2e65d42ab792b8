"""ControlNet for task conditions (Zhang et al., ICCV 2023) on the MedDiff-FM denoiser.

The base UNet stays frozen; a trainable copy of its encoder (MONAI's ControlNet, initialised from
the UNet's weights) reads the same input as the UNet plus a task condition c_t (the low-resolution
volume for super-resolution, the lesion mask for lesion generation), and adds its zero-initialised
residuals to the UNet's skip connections. In pixel space the condition has the image's size, so the
conditioning stem must not downsample: one stage, `conditioning_channels` of length 1.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.nets import ControlNet
from monai.networks.utils import copy_model_state
from torch import nn

from .network import MedDiffFMNet, NetworkConfig

CONTROL_TASKS = ("superres", "lesion")


@dataclass(frozen=True)
class ControlNetConfig:
    task: str = "lesion"  # what c_t is: "superres" (low-resolution volume) or "lesion" (lesion mask)
    control_channels: int = 1
    conditioning_channels: int = 16  # width of the single-stage conditioning stem

    def __post_init__(self) -> None:
        if self.task not in CONTROL_TASKS:
            raise ValueError(f"ControlNet task must be one of {CONTROL_TASKS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ControlNetConfig":
        return cls(**data)


class MedDiffFMControlNet(nn.Module):
    """The trainable encoder copy; returns the residuals for the base UNet."""

    def __init__(self, base_config: NetworkConfig, config: ControlNetConfig, fused_attention: bool = True):
        super().__init__()
        self.base_config = base_config
        self.config = config
        self.controlnet = ControlNet(
            spatial_dims=3,
            in_channels=base_config.in_channels,
            num_res_blocks=base_config.num_res_blocks,
            channels=base_config.channels,
            attention_levels=base_config.attention_levels,
            norm_num_groups=base_config.norm_num_groups,
            num_head_channels=base_config.num_head_channels,
            num_class_embeds=base_config.num_region_classes,
            conditioning_embedding_in_channels=config.control_channels,
            conditioning_embedding_num_channels=(config.conditioning_channels,),
            use_flash_attention=fused_attention,  # as in MedDiffFMNet: same weights, SDPA kernels
        )

    @classmethod
    def from_base(cls, base: MedDiffFMNet, config: ControlNetConfig) -> "MedDiffFMControlNet":
        """A fresh ControlNet with the base UNet's encoder weights; its output convolutions stay zero,
        so at first it leaves the base model's output unchanged."""
        net = cls(base.config, config)
        # MONAI logs "'dst' model updated: 83 of 101 variables." at INFO on its own stdout handler:
        # bookkeeping, not a message for the user's terminal (nor a line in --progress json's stdout).
        log = logging.getLogger(copy_model_state.__module__)
        level = log.level
        log.setLevel(logging.WARNING)
        try:
            copy_model_state(net.controlnet, base.unet.state_dict())
        finally:
            log.setLevel(level)
        return net

    def forward(self, unet_input, timesteps, control, class_labels, conditioning_scale: float = 1.0):
        return self.controlnet(
            unet_input, timesteps, controlnet_cond=control, conditioning_scale=conditioning_scale,
            class_labels=class_labels,
        )


class ControlledDenoiser(nn.Module):
    """eps_theta(x_t, t | c_r, c_a, p_e, c_t): the frozen base with a ControlNet. Same call as
    MedDiffFMNet plus `control` (N, C, D, H, W), so the sampling core drives either."""

    def __init__(self, base: MedDiffFMNet, controlnet: MedDiffFMControlNet, conditioning_scale: float = 1.0):
        super().__init__()
        if controlnet.base_config != base.config:
            raise ValueError("the ControlNet was made for another base architecture")
        self.base = base
        self.controlnet = controlnet
        self.conditioning_scale = conditioning_scale

    @property
    def config(self) -> NetworkConfig:
        return self.base.config

    def forward(self, x, timesteps, region=None, anatomy=None, coords=None, control=None):
        if control is None:
            raise ValueError(f"the {self.controlnet.config.task} ControlNet needs its control volume")
        n = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device).long().reshape(-1).expand(n)
        unet_input = self.base.assemble_input(x, coords, anatomy)
        labels = self.base.region_labels(region, n, x.device)
        down, mid = self.controlnet(unet_input, timesteps, control.to(x.dtype), labels, self.conditioning_scale)
        return self.base.unet(
            unet_input, timesteps, class_labels=labels,
            down_block_additional_residuals=down, mid_block_additional_residual=mid,
        )
