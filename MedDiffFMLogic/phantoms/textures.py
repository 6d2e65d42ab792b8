"""Tissue texture (spatially correlated noise) and the blur that gives partial volume and the scanner PSF."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

def _texture(rng, shape, spacing) -> np.ndarray:
    """Unit-variance correlated noise: a fine (1.2 mm) and a coarse (4 mm) component."""
    spacing = np.asarray(spacing, float)[::-1]  # z, y, x
    out = np.zeros(shape, dtype=np.float32)
    for corr, weight in ((1.2, 1.0), (4.0, 0.6)):
        white = rng.standard_normal(shape, dtype=np.float32)
        f = ndimage.gaussian_filter(white, sigma=np.maximum(corr / spacing, 0.3), mode="wrap")
        sd = float(f.std()) or 1.0
        out += (weight / sd) * f
    out /= np.float32(math.sqrt(1.0 + 0.36))
    return out


def _psf_sigma(spacing) -> np.ndarray:
    """Gaussian sigma in voxels (z, y, x): voxel integration (box of one voxel) and a 0.6 mm scanner PSF."""
    sp = np.asarray(spacing, float)[::-1]
    return np.sqrt((0.29 * sp) ** 2 + 0.6**2) / sp

