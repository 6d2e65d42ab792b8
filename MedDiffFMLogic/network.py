"""The MedDiff-FM denoiser: MONAI's 3D DiffusionModelUNet with the paper's three conditions.

Conditions and where they enter (the paper does not say; the choices are in seeds/choices.md):
- region class c_r (head-and-neck, chest, abdomen, unknown): MONAI's class embedding, added to the
  timestep embedding;
- anatomy label map c_a (TotalSegmentator's 117 classes + body = 118, 0 = background): 7 binary
  bit-planes in {-1, +1}, concatenated to the input channels; all zeros when absent;
- 3D position p_e: each voxel's coordinate in the whole-volume frame, normalised to [-1, 1] per axis,
  NeRF-encoded as (p, sin(2^k pi p), cos(2^k pi p)) for k < position_frequencies, concatenated to the
  input channels; all zeros when absent (coords=None, or NaN coordinates for single samples).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

from .regions import NUM_REGION_CLASSES, REGION_INDEX, UNKNOWN_REGION

UNKNOWN_REGION_INDEX = REGION_INDEX[UNKNOWN_REGION]


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of the denoiser; stored in every model card and checkpoint."""

    channels: tuple[int, ...] = (32, 64, 128, 256)
    attention_levels: tuple[bool, ...] = (False, False, False, True)
    num_res_blocks: int = 1
    num_head_channels: int = 32
    norm_num_groups: int = 32
    position_frequencies: int = 4
    anatomy_bits: int = 7  # 2**7 = 128 > 119 anatomy labels
    num_region_classes: int = NUM_REGION_CLASSES
    window_size: int = 128  # the training patch edge
    # the default sampling window edge (None: window_size); a fully convolutional network with an absolute
    # position embedding runs on larger windows than it trained on, and larger windows cost less per voxel
    sampling_window: int | None = None

    def __post_init__(self) -> None:
        levels = len(self.channels)
        if len(self.attention_levels) != levels:
            raise ValueError("channels and attention_levels must have the same length")
        if any(c % self.norm_num_groups for c in self.channels):
            raise ValueError(f"every entry of channels must be a multiple of norm_num_groups={self.norm_num_groups}")
        for edge in (self.window_size, self.default_window):
            if edge % self.size_divisor:
                raise ValueError(f"window sizes must be multiples of {self.size_divisor} for {levels} levels")

    @property
    def default_window(self) -> int:
        """The sampling window edge when the user gives none."""
        return self.sampling_window or self.window_size

    @property
    def position_channels(self) -> int:
        return 3 + 6 * self.position_frequencies

    @property
    def in_channels(self) -> int:
        return 1 + self.position_channels + self.anatomy_bits

    @property
    def size_divisor(self) -> int:
        """Every spatial size fed to the UNet must be a multiple of this."""
        return 2 ** (len(self.channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown network config fields: {sorted(unknown)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


# The paper's model (base 32 channels, 1 residual block per level, attention only at 16^3 for a
# 128^3 input); channel multipliers (1, 2, 4, 8) are our choice, the paper does not give them.
PAPER = NetworkConfig()
# A CPU-sized model for the bundled demonstration weights.
SMALL = NetworkConfig(
    channels=(16, 32, 64), attention_levels=(False, False, True), num_head_channels=16,
    norm_num_groups=16, position_frequencies=3, window_size=64,
)
# The CPU scale (seeds/scale.md): four levels with a 16-channel full-resolution level and attention only at
# the deepest (4^3 tokens at a 32^3 training window, 8^3 at a 64^3 sampling window); 0.64 s per training
# step of four 32^3 windows on two cores against SMALL's 0.99 s, and about twice SMALL's voxels per second
# when sampling in 64^3 windows.
CPU = NetworkConfig(
    channels=(16, 16, 32, 64), attention_levels=(False, False, False, True), num_head_channels=16,
    norm_num_groups=8, position_frequencies=3, window_size=32,
)
# The smallest sensible model, for tests at 32^3.
TINY = NetworkConfig(
    channels=(8, 16, 16), attention_levels=(False, False, True), num_head_channels=8,
    norm_num_groups=8, position_frequencies=2, window_size=32,
)
PRESETS = {"paper": PAPER, "small": SMALL, "cpu": CPU, "tiny": TINY}


def position_encoding(coords: torch.Tensor, frequencies: int) -> torch.Tensor:
    """NeRF-style encoding of (N, 3, D, H, W) coordinates in [-1, 1] -> (N, 3 + 6F, D, H, W)."""
    features = [coords]
    for k in range(frequencies):
        scaled = coords * (math.pi * 2.0**k)
        features += [torch.sin(scaled), torch.cos(scaled)]
    return torch.cat(features, dim=1)


ABSENT_ANATOMY = -1  # a label value meaning "no anatomy given here" (zero bit-planes)


def anatomy_bitplanes(labels: torch.Tensor, bits: int) -> torch.Tensor:
    """(N, D, H, W) integer labels -> (N, bits, D, H, W) bit-planes in {-1, +1}; ABSENT_ANATOMY -> 0."""
    labels = labels.long()
    if labels.min() < ABSENT_ANATOMY or labels.max() >= 2**bits:
        raise ValueError(f"anatomy labels must lie in [0, {2**bits - 1}]")
    shifts = torch.arange(bits, device=labels.device).view(1, bits, 1, 1, 1)
    present = (labels >= 0).unsqueeze(1)
    planes = (labels.clamp_min(0).unsqueeze(1) >> shifts) & 1
    return (planes.float() * 2.0 - 1.0) * present


def coordinate_grid(axes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-axis coordinate vectors (z, y, x order) -> a (1, 3, D, H, W) grid."""
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grids, dim=0).unsqueeze(0)


def whole_volume_axes(shape: Sequence[int], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Coordinates of every voxel of a whole volume: [-1, 1] along each axis (a single voxel sits at 0)."""
    return tuple(
        torch.linspace(-1.0, 1.0, n, device=device) if n > 1 else torch.zeros(1, device=device) for n in shape
    )


class MedDiffFMNet(nn.Module):
    """Epsilon predictor eps_theta(x_t, t | c_r, c_a, p_e).

    fused_attention runs MONAI's attention blocks through PyTorch's scaled_dot_product_attention
    (MONAI's `use_flash_attention`): the same weights and, to float rounding, the same output, without
    materialising the (16^3)^2 attention matrix; about 15% faster per window on a CPU at 64^3 and far
    less memory at the paper's 128^3 windows. It is a way of running the model, not part of its
    architecture, so it is not stored in NetworkConfig.
    """

    def __init__(self, config: NetworkConfig, fused_attention: bool = True):
        super().__init__()
        self.config = config
        self.unet = DiffusionModelUNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=1,
            num_res_blocks=config.num_res_blocks,
            channels=config.channels,
            attention_levels=config.attention_levels,
            norm_num_groups=config.norm_num_groups,
            num_head_channels=config.num_head_channels,
            num_class_embeds=config.num_region_classes,
            use_flash_attention=fused_attention,
        )

    def condition_channels(
        self, shape: Sequence[int], coords: torch.Tensor | None, anatomy: torch.Tensor | None,
        device: torch.device, dtype: torch.dtype,
    ) -> torch.Tensor:
        """The (N, C-1, D, H, W) condition channels that are concatenated to x_t."""
        n, spatial = shape[0], tuple(shape[2:])
        cfg = self.config
        if coords is None:
            pos = torch.zeros((n, cfg.position_channels, *spatial), device=device, dtype=dtype)
        else:
            # NaN coordinates mark a sample whose position was dropped: its channels become zeros,
            # exactly what an absent position gives.
            pos = position_encoding(coords.to(device=device, dtype=dtype), cfg.position_frequencies)
            pos = torch.nan_to_num(pos, nan=0.0).expand(n, -1, -1, -1, -1)
        if anatomy is None:
            ana = torch.zeros((n, cfg.anatomy_bits, *spatial), device=device, dtype=dtype)
        else:
            ana = anatomy_bitplanes(anatomy.to(device), cfg.anatomy_bits).to(dtype).expand(n, -1, -1, -1, -1)
        return torch.cat([pos, ana], dim=1)

    def assemble_input(
        self, x: torch.Tensor, coords: torch.Tensor | None = None, anatomy: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x_t concatenated with its condition channels: the UNet's (and a ControlNet's) input."""
        cond = self.condition_channels(x.shape, coords, anatomy, x.device, x.dtype)
        return torch.cat([x, cond], dim=1)

    def region_labels(self, region: torch.Tensor | int | None, batch: int, device: torch.device) -> torch.Tensor:
        if region is None:
            region = UNKNOWN_REGION_INDEX
        if isinstance(region, int):
            return torch.full((batch,), region, dtype=torch.long, device=device)
        return region.to(device=device, dtype=torch.long).expand(batch)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        region: torch.Tensor | int | None = None,
        anatomy: torch.Tensor | None = None,
        coords: torch.Tensor | None = None,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (N, 1, D, H, W) noisy image; timesteps: (N,) or scalar; region: (N,) or int class index;
        anatomy: (N, D, H, W) integer labels; coords: (N or 1, 3, D, H, W) whole-volume coordinates."""
        n = x.shape[0]
        timesteps = torch.as_tensor(timesteps, device=x.device).long().reshape(-1).expand(n)
        return self.unet(
            self.assemble_input(x, coords, anatomy),
            timesteps,
            class_labels=self.region_labels(region, n, x.device),
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
        )
