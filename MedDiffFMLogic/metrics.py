"""Figures of merit the demo and the benchmarks report, each defined once: in HU (RMSE, means), on the
region's HU window (PSNR, SSIM), on masks (Dice) and on scores (AUROC); JSON for numpy values; and
the check that a denoise took away noise, not structure (edge_blur_voxels)."""

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


# Above this edge blur (voxels) a denoise's residual follows the image's edges: structure was removed or
# changed, not only noise. Calibrated on chest, abdomen and head phantoms at 0.7-3 mm pixels with
# simulated low-dose noise of 5-120 HU: residual = the noise exactly reads 0.01-0.29 (rising with the
# noise; 0.01-0.15 up to 60 HU), the output Gaussian-blurred by sigma 0.5 / 0.7 / 1 / 2 voxels reads
# 0.3-0.4 / 0.5-0.65 / 0.8-0.9 / 1.1-1.9. The bundled demo model's denoise reads 0.02-0.05 on chest
# phantoms (4, 2 and 0.8 mm), and 0.7-1.0 on abdomen phantoms at 1.5 and 0.8 mm, where it brightens
# the fat under the skin by 40-60 HU (a contour in the residual): that must warn.
EDGE_BLUR_WARN_VOXELS = 0.5


def edge_blur_voxels(before: np.ndarray, after: np.ndarray, slices: int = 32) -> float:
    """How much a denoise's residual (before - after, HU, (z, y, x)) follows the result's edges, as the
    width in voxels of a Gaussian blur that would leave such a residual: about 0 when the residual is
    noise, about sigma when `after` is `before` blurred by sigma voxels.

    In-plane on up to `slices` evenly spaced axial slices (CT noise is made per slice; bounded cost): the
    residual's RMS on the 5 % of voxels with the strongest gradient of the result (its edges) in excess of
    its RMS on the flatter half (noise, which edges do not change), in quadrature, over the edges' mean
    gradient (HU per voxel). Voxels the result left exactly unchanged (beyond the HU window) are not
    counted. Torch-free.
    """
    from scipy import ndimage

    picked = np.unique(np.linspace(0, len(before) - 1, min(slices, len(before))).round().astype(int))
    residuals, gradients = [], []
    for z in picked:
        result = np.asarray(after[z], dtype=np.float64)
        residual = np.asarray(before[z], dtype=np.float64) - result
        changed = residual != 0
        residuals.append(residual[changed])
        gradients.append(ndimage.gaussian_gradient_magnitude(result, 1.0)[changed])
    residual, gradient = np.concatenate(residuals), np.concatenate(gradients)
    if residual.size < 100:
        return 0.0  # (almost) nothing changed: nothing to judge
    edges = gradient >= np.quantile(gradient, 0.95)
    flat = gradient <= np.quantile(gradient, 0.5)
    excess = np.mean(residual[edges] ** 2) - np.mean(residual[flat] ** 2)
    scale = float(np.mean(gradient[edges]))
    return float(np.sqrt(max(excess, 0.0)) / scale) if scale > 0 else 0.0


def denoise_residual_warning(before: np.ndarray, after: np.ndarray) -> str | None:
    """A warning when a denoise removed structure, not noise (see edge_blur_voxels), else None."""
    blur = edge_blur_voxels(before, after)
    if blur <= EDGE_BLUR_WARN_VOXELS:
        return None
    return (f"the denoise took away structure, not only noise: what it took away (input - output) follows the "
            f"image's edges, as a blur of about {blur:.1f} voxels would (noise alone reads below "
            f"{EDGE_BLUR_WARN_VOXELS:g}); compare the result with the input, and try a lower --strength or "
            "--noise-level")


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
