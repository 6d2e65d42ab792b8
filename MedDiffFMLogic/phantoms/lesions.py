"""Lesions inside their host organ (LESION_MODELS): placement by distance transform, bumpy boundaries."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .atlas import _l
from .config import LESION_MODELS, PhantomConfig
from .shapes import _Canvas, _Fourier

def _lesions(cv: _Canvas, config: PhantomConfig, rng) -> np.ndarray:
    model = LESION_MODELS[config.region]
    organ_labels = np.array([_l(n) for n in model["organs"]], dtype=np.uint8)
    organ = np.isin(cv.lab, organ_labels)
    mask = np.zeros(cv.shape, dtype=bool)
    if config.lesions == 0:
        return mask
    if not organ.any():
        raise InputError(
            f"no {'/'.join(model['organs'])} in this field of view to put lesions in; "
            "enlarge the volume or set lesions=0"
        )
    sp = np.asarray(config.spacing, float)[::-1]  # z, y, x
    edt = ndimage.distance_transform_edt(organ, sampling=sp)  # mm to the nearest non-organ voxel
    organ_hu = float(np.median(cv.hu[organ]))
    irr = model["irregularity"]
    placed = []  # (centre index zyx, physical radius)
    rmin, rmax = config.lesion_radius_mm
    for _ in range(int(config.lesions)):
        radius = float(rng.uniform(rmin, rmax))
        bump = _Fourier(rng, 6, (1.5, 3.0))  # boundary bumps over the unit sphere of directions
        if model["mode"] == "absolute":
            hu = float(rng.uniform(*model["hu"][0]))
        else:
            lo, hi = model["hu"][int(rng.integers(len(model["hu"])))]
            hu = organ_hu + float(rng.uniform(lo, hi))
        # largest extent of the bumpy boundary plus half a voxel keeps the lesion inside the organ
        need = radius * (1.0 + 1.5 * irr) + 0.5 * float(sp.max())
        best = float(edt.max())
        if best < need:  # does not fit: shrink to what fits (still wholly inside)
            radius = max((best - 0.5 * float(sp.max())) / (1.0 + 1.5 * irr), 0.5 * float(sp.min()))
            need = best
        cand = np.argwhere(edt >= need - 1e-6)
        if placed:
            keep = np.ones(len(cand), dtype=bool)
            for c0, r0 in placed:
                d = np.sqrt((((cand - c0) * sp) ** 2).sum(axis=1))
                keep &= d > (r0 + radius) * (1.0 + 1.5 * irr) + 2.0
            if keep.any():
                cand = cand[keep]
        centre = cand[int(rng.integers(len(cand)))]
        placed.append((centre, radius))
        # physical offsets in a box around the centre
        ext = np.ceil(radius * (1.0 + 1.5 * irr) / sp).astype(int) + 1
        sl = tuple(slice(max(int(c) - e, 0), min(int(c) + e + 1, n)) for c, e, n in zip(centre, ext, cv.shape))
        gz, gy, gx = np.meshgrid(*[(np.arange(s.start, s.stop) - c) * d for s, c, d in zip(sl, centre, sp)],
                                 indexing="ij")
        dist = np.sqrt(gx**2 + gy**2 + gz**2) + 1e-6
        r_dir = radius * (1.0 + irr * np.clip(bump(gx / dist, gy / dist, gz / dist), -1.5, 1.5))
        m = (dist < r_dir) & organ[sl]
        mask[sl] |= m
        cv.put(sl, m, hu=np.float32(hu), tex=np.float32(model["texture"]))
    return mask

