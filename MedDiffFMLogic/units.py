"""The network's units: CT in HU <-> the region's window mapped onto [-1, 1], for images and tensors.

The arithmetic is `regions.hu_to_unit` / `regions.unit_to_hu` (numpy, torch-free); these are the only
adapters between it and SimpleITK images or torch tensors. Tasks and training both use them.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from .ctio import from_array, to_array
from .regions import hu_to_unit, unit_to_hu


# The values a CT in HU can hold (12-bit scanners: air at -1024, the top of the range at 3071). The chest
# window reaches down to -1400 HU, so a sample mapped back from [-1, 1] can fall below what any scanner
# writes; every task's result is clamped here (TaskInputs.result), widened to the input's own range
# where the input goes beyond it (a scanner writing -2048 outside its field of view, metal).
PHYSICAL_HU = (-1024.0, 3071.0)


def physical_range(image: sitk.Image | None = None) -> tuple[float, float]:
    """PHYSICAL_HU, widened to the image's own minimum and maximum when they lie beyond it."""
    low, high = PHYSICAL_HU
    if image is not None:
        values = sitk.GetArrayViewFromImage(image)
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    return low, high


def clamp_physical(image: sitk.Image, bounds: tuple[float, float]) -> sitk.Image:
    """The image with its values clamped to bounds (low, high), on the same grid."""
    array = to_array(image)
    clipped = np.clip(array, *bounds)
    return image if np.array_equal(clipped, array) else from_array(clipped, image)


def window_to_unit(image: sitk.Image, region: str) -> np.ndarray:
    """HU -> the network's [-1, 1] through the region's window (values outside it are clipped), (z, y, x) float32."""
    return hu_to_unit(to_array(image), region).astype(np.float32, copy=False)


def unit_to_image(unit: np.ndarray | torch.Tensor, reference: sitk.Image, region: str) -> sitk.Image:
    """[-1, 1] (a (z, y, x) array, or a (1, 1, D, H, W) tensor) -> a float32 HU image on the reference's
    grid; the inverse of window_to_unit inside the window."""
    if isinstance(unit, torch.Tensor):
        unit = unit[0, 0].detach().cpu().numpy()
    return from_array(unit_to_hu(unit, region).astype(np.float32, copy=False), reference)


def to_unit_tensor(image: sitk.Image, region: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """HU image -> (1, 1, D, H, W) float32 tensor in the region's [-1, 1] window."""
    return torch.from_numpy(window_to_unit(image, region))[None, None].to(device)
