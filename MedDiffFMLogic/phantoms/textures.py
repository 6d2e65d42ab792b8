"""Tissue texture (spatially correlated noise) and the blur that gives partial volume and the scanner PSF."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

def _texture(rng, shape, spacing) -> np.ndarray:
    """Correlated tissue texture: a fine (1.2 mm) and a coarse (4 mm) component, unit variance at 1 mm voxels.

    The texture is a property of the tissue, not of the grid: each component is white noise filtered by
    its correlation length and by the voxel (a box, as a Gaussian of 0.29 voxel), so coarse voxels
    average it down as a scanner would (the fine component keeps about 60 % of its SD at 4 mm voxels).
    """
    spacing = np.asarray(spacing, float)[::-1]  # z, y, x
    out = np.zeros(shape, dtype=np.float32)
    for corr, weight in ((1.2, 1.0), (4.0, 0.6)):
        white = rng.standard_normal(shape, dtype=np.float32)
        blur = np.sqrt(corr**2 + (0.29 * spacing) ** 2)  # mm, per axis
        f = ndimage.gaussian_filter(white, sigma=np.maximum(blur / spacing, 0.3), mode="wrap")
        # white noise filtered by a Gaussian of sigma s has variance proportional to 1/s per axis
        reference = np.sqrt(corr**2 + 0.29**2)  # the same at 1 mm voxels
        sd = float(f.std()) or 1.0
        out += np.float32(weight * float(np.prod(reference / blur)) ** 0.5 / sd) * f
    out /= np.float32(math.sqrt(1.0 + 0.36))
    return out


def _psf_sigma(spacing) -> np.ndarray:
    """Gaussian blur sigma in voxels (z, y, x) applied after the supersampled render.

    In-plane: a 0.6 mm scanner point-spread function (about 1.4 mm FWHM with the voxel). Along z: the
    slice-sensitivity profile; with the render's three sub-slices (a box of one slice) a Gaussian of
    0.35 slice gives a profile whose FWHM is about the slice spacing, as reconstructed CT slices have.
    """
    sp = np.asarray(spacing, float)[::-1]
    sigma = np.full(3, 0.6) / sp
    sigma[0] = max(0.35, 0.6 / sp[0])
    return sigma
