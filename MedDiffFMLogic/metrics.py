"""Figures of merit the demo and the benchmarks report, each defined once: in HU (RMSE, means), on the
region's HU window (PSNR, SSIM), on masks (Dice) and on scores (AUROC); and JSON for numpy values."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .regions import HU_WINDOWS


def window(hu: np.ndarray, region: str) -> np.ndarray:
    """HU clipped to the region's window, float64."""
    low, high = HU_WINDOWS[region]
    return np.clip(hu, low, high).astype(np.float64)


def psnr(a: np.ndarray, truth: np.ndarray, where: np.ndarray, region: str) -> float:
    """PSNR in dB on the region's window, over the voxels in `where`."""
    low, high = HU_WINDOWS[region]
    mse = np.mean((window(a, region)[where] - window(truth, region)[where]) ** 2)
    return float(10.0 * np.log10((high - low) ** 2 / max(mse, 1e-12)))


def ssim(a: np.ndarray, truth: np.ndarray, where: np.ndarray, region: str) -> float:
    """Mean of the axial 2D SSIM maps (on the region's window) over the voxels in `where`."""
    from skimage.metrics import structural_similarity

    low, high = HU_WINDOWS[region]
    x, y = window(a, region), window(truth, region)
    maps = np.stack([structural_similarity(x[k], y[k], data_range=high - low, full=True)[1] for k in range(len(x))])
    return float(maps[where].mean())


def rmse(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Root-mean-square difference over the voxels in `where` (HU)."""
    return float(np.sqrt(np.mean((a[where].astype(np.float64) - b[where]) ** 2)))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two bool masks (1 when both are empty)."""
    total = int(a.sum() + b.sum())
    return float(2.0 * (a & b).sum() / total) if total else 1.0


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mean(values) -> float:
    """Mean of the finite values (None and NaN left out); NaN when there are none."""
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def plain(value):
    """json.dumps(default=plain): numpy scalars, tuples and paths as JSON values."""
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value).__name__)
