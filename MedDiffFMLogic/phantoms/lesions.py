"""Lesions inside their host organ (LESION_MODELS): placement by distance transform, shapes, densities.

A lesion is planned once on the centre sub-grid (where it goes, its size, kind and density), then painted
on every sub-grid of the supersampled render in physical millimetres, so its edge gets partial volume.
Kinds (per region, drawn by the model's weights):
- lung nodules: solid, part-solid (a ground-glass halo around a solid core) or ground glass; round,
  lobulated or spiculated (thin strands radiating from the surface);
- liver lesions: hypodense (metastases, cysts) or hyperdense (e.g. haemangioma, hypervascular metastases);
- brain lesions: hyperdense (haemorrhage) or hypodense (oedema, infarct).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .atlas import _l
from .config import LESION_MODELS, PhantomConfig
from .shapes import _Canvas, _Fourier, _unit

_SHAPES = {"round": 0.05, "lobulated": 0.22, "spiculated": 0.08}  # boundary bump amplitude


@dataclass
class _Lesion:
    centre: np.ndarray  # continuous index (z, y, x) on the centre sub-grid
    radius: float  # mm
    irregularity: float
    bump: _Fourier
    hu: float  # solid part (or the whole lesion)
    halo_hu: float | None  # ground-glass part (part-solid: outside the core; ground glass: whole lesion)
    core: float  # solid core radius / radius (part-solid)
    texture: float
    spicules: list  # (unit direction, length mm, radius mm)

    @property
    def extent(self) -> float:
        reach = max((length for _, length, _ in self.spicules), default=0.0)
        return max(self.radius * (1.0 + 1.5 * self.irregularity), self.radius + reach)


def _draw_kind(model, rng):
    kinds = model["kinds"]
    weights = np.array([k["weight"] for k in kinds], float)
    return kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]


def _plan_one(model, rng, radius, organ_hu) -> _Lesion:
    kind = _draw_kind(model, rng)
    shape = kind.get("shapes", ("round",))[int(rng.integers(len(kind.get("shapes", ("round",)))))]
    irr = _SHAPES[shape] if "shapes" in kind else model["irregularity"]
    bump = _Fourier(rng, 6, (1.5, 3.0))  # boundary bumps over the unit sphere of directions
    lo, hi = kind["hu"]
    hu = float(rng.uniform(lo, hi)) + (organ_hu if model["mode"] == "relative" else 0.0)
    halo, core = None, 1.0
    if "halo_hu" in kind:  # ground glass, with a solid core for part-solid nodules
        halo = float(rng.uniform(*kind["halo_hu"]))
        core = float(rng.uniform(*kind.get("core", (0.0, 0.0))))
    spicules = []
    if shape == "spiculated":
        for _ in range(int(rng.integers(6, 13))):
            spicules.append((_unit(rng.normal(size=3)), radius * float(rng.uniform(0.5, 1.1)),
                             float(rng.uniform(0.35, 0.7))))
    return _Lesion(np.zeros(3), radius, irr, bump, hu, halo, core, float(kind["texture"]), spicules)


def plan_lesions(cv: _Canvas, config: PhantomConfig, rng) -> list[_Lesion]:
    """Where each lesion goes (wholly inside the host organ, clear of the others), its size and kind."""
    if config.lesions == 0:
        return []
    model = LESION_MODELS[config.region]
    organ = np.isin(cv.lab, np.array([_l(n) for n in model["organs"]], dtype=np.uint8))
    if not organ.any():
        raise InputError(
            f"no {'/'.join(model['organs'])} in this field of view to put lesions in; "
            "enlarge the volume or set lesions=0"
        )
    sp = np.asarray(config.spacing, float)[::-1]  # z, y, x
    edt = ndimage.distance_transform_edt(organ, sampling=sp)  # mm to the nearest non-organ voxel
    organ_hu = float(np.median(cv.hu[organ]))
    rmin, rmax = config.lesion_radius_mm
    placed: list[_Lesion] = []
    for _ in range(int(config.lesions)):
        lesion = _plan_one(model, rng, float(rng.uniform(rmin, rmax)), organ_hu)
        # the largest extent plus a voxel's half-diagonal keeps every painted voxel inside the organ
        pad = 0.5 * float(np.linalg.norm(sp))
        need, best = lesion.extent + pad, float(edt.max())
        if best < need:  # does not fit: shrink to what fits (still wholly inside)
            shrink = max((best - pad) / lesion.extent, 1e-3)
            lesion.radius *= shrink
            lesion.spicules = [(d, length * shrink, r) for d, length, r in lesion.spicules]
            need = best
        cand = np.argwhere(edt >= need - 1e-6)
        if placed:
            keep = np.ones(len(cand), dtype=bool)
            for other in placed:
                d = np.sqrt((((cand - other.centre) * sp) ** 2).sum(axis=1))
                keep &= d > other.extent + lesion.extent + 2.0
            if keep.any():
                cand = cand[keep]
        lesion.centre = cand[int(rng.integers(len(cand)))].astype(float)
        placed.append(lesion)
    return placed


def _spicule_mask(g, spicules) -> np.ndarray:
    gz, gy, gx = g
    out = np.zeros(gz.shape, dtype=bool)
    for d, length, r in spicules:
        t = np.clip(gx * d[0] + gy * d[1] + gz * d[2], 0.0, length)
        dist2 = (gx - t * d[0]) ** 2 + (gy - t * d[1]) ** 2 + (gz - t * d[2]) ** 2
        out |= dist2 < (r * (1.0 - 0.6 * t / length)) ** 2  # strands taper outwards
    return out


def paint_lesions(cv: _Canvas, lesions: list[_Lesion], organ_labels, spacing) -> np.ndarray:
    """Paint the planned lesions on a (sub-)grid; returns their mask on that grid (inside the organ only)."""
    mask = np.zeros(cv.shape, dtype=bool)
    sp = np.asarray(spacing, float)[::-1]
    shift = cv.offset[::-1]  # this sub-grid's offset (z, y, x) in voxels
    for les in lesions:
        ext = np.ceil(les.extent / sp).astype(int) + 2
        c = les.centre - shift
        sl = tuple(slice(max(int(round(ci)) - e, 0), min(int(round(ci)) + e + 1, n))
                   for ci, e, n in zip(c, ext, cv.shape))
        g = np.meshgrid(*[((np.arange(s.start, s.stop) - ci) * d).astype(np.float32) for s, ci, d in zip(sl, c, sp)],
                        indexing="ij")
        gz, gy, gx = g
        dist = np.sqrt(gx**2 + gy**2 + gz**2) + np.float32(1e-6)
        rel = dist / (les.radius * (1.0 + les.irregularity * np.clip(les.bump(gx / dist, gy / dist, gz / dist),
                                                                     -1.5, 1.5)))
        inside = rel < 1.0
        if les.spicules:
            inside |= _spicule_mask(g, les.spicules)
        m = inside & np.isin(cv.lab[sl], organ_labels)
        mask[sl] |= m
        if les.halo_hu is None:
            hu = np.float32(les.hu)
        else:
            hu = np.where(rel < les.core, np.float32(les.hu), np.float32(les.halo_hu))
        cv.put(sl, m, hu=hu, tex=np.float32(les.texture))
    return mask
