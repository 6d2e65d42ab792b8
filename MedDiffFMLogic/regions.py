"""Body regions and the paper's per-region HU windows, with the mapping to the network's [-1, 1] range."""

from __future__ import annotations

import numpy as np

from .errors import InputError

# The paper's three region classes; index 3 ("unknown") is what the network sees when the region is
# not given or was dropped in training.
REGIONS = ("head_neck", "chest", "abdomen")
UNKNOWN_REGION = "unknown"
REGION_INDEX = {name: i for i, name in enumerate(REGIONS)} | {UNKNOWN_REGION: len(REGIONS)}
NUM_REGION_CLASSES = len(REGION_INDEX)
# The tasks' --region: "auto" (the default) is detected from the scan (regiondetect.resolve_region).
AUTO_REGION = "auto"
REGION_CHOICES = (AUTO_REGION, *REGIONS)

# HU windows (low, high) from the paper: head-and-neck W400/L50, chest W1800/L-500, abdomen W360/L60.
HU_WINDOWS: dict[str, tuple[float, float]] = {
    "head_neck": (-150.0, 250.0),
    "chest": (-1400.0, 400.0),
    "abdomen": (-120.0, 240.0),
}
# Inputs without a known region use the widest window, so no tissue is clipped away.
HU_WINDOWS[UNKNOWN_REGION] = HU_WINDOWS["chest"]


def check_region(region: str, auto: bool = False) -> str:
    """The region, when known (auto=True: "auto" too, a task's setting before it is resolved)."""
    if region not in REGION_INDEX and not (auto and region == AUTO_REGION):
        known = ((AUTO_REGION,) if auto else ()) + tuple(REGION_INDEX)
        raise InputError(f"unknown region {region!r}; choose one of {', '.join(known)}")
    return region


def region_index(region: str) -> int:
    return REGION_INDEX[check_region(region)]


def hu_to_unit(hu: np.ndarray, region: str, clip: bool = True) -> np.ndarray:
    """Map HU inside the region's window linearly onto [-1, 1]; values outside are clipped unless clip=False."""
    low, high = HU_WINDOWS[check_region(region)]
    unit = (np.asarray(hu, dtype=np.float32) - low) * (2.0 / (high - low)) - 1.0
    return np.clip(unit, -1.0, 1.0) if clip else unit


def unit_to_hu(unit: np.ndarray, region: str) -> np.ndarray:
    """Inverse of hu_to_unit for values inside the window."""
    low, high = HU_WINDOWS[check_region(region)]
    return (np.asarray(unit, dtype=np.float32) + 1.0) * ((high - low) / 2.0) + low


def hu_per_unit(region: str) -> float:
    """HU per unit of the [-1, 1] scale: converts noise levels between the two."""
    low, high = HU_WINDOWS[check_region(region)]
    return (high - low) / 2.0
