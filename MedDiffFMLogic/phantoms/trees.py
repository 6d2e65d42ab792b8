"""Space-filling vessel and airway trees, and their rasterisation as partial-volume fractions.

A tree is grown from a root towards a cloud of target points that fill its organ (drawn per seed): each
node heads for the centroid of its points, which are then split in two across their longest axis, until
each branch serves one point. Radii follow Murray's law from the number of points served
(r = r_leaf * n^(1/3)), so the trees taper from the hila to about 1 mm and fill the organ evenly.
"""

from __future__ import annotations

import math

import numpy as np

# a segment: (start, end, start radius, end radius, points served) in nominal mm
Segment = tuple


def grow(rng, root, points, r_leaf: float, reach: float = 0.55, wiggle: float = 0.08) -> list[Segment]:
    """Segments of a tree from root towards the target points (nominal mm)."""
    segs: list[Segment] = []
    stack = [(np.asarray(root, float), np.asarray(points, float), None)]
    while stack:
        p, pts, r_parent = stack.pop()
        n = len(pts)
        r = r_leaf * n ** (1.0 / 3.0)
        if n == 1:
            segs.append((p, pts[0], r_parent or r, r, 1))
            continue
        c = pts.mean(axis=0)
        q = p + (c - p) * reach
        q = q + rng.normal(0.0, wiggle, 3) * np.linalg.norm(c - p)
        segs.append((p, q, r_parent or r, r, n))
        centred = pts - c
        order = np.argsort(centred[:, int(np.argmax(centred.var(axis=0)))])  # across the widest axis
        half = n // 2
        stack.append((q, pts[order[:half]], r))
        stack.append((q, pts[order[half:]], r))
    return segs


def sample_points(rng, inside, lo, hi, n: int) -> np.ndarray:
    """n points drawn uniformly where inside(x, y, z) holds, within the box lo..hi (nominal mm)."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    out = np.zeros((0, 3))
    for _ in range(50):
        cand = lo + rng.uniform(size=(4 * n, 3)) * (hi - lo)
        cand = cand[inside(cand[:, 0], cand[:, 1], cand[:, 2])]
        out = np.vstack([out, cand])
        if len(out) >= n:
            return out[:n]
    return out


def split(segs: list[Segment], radius: float):
    """(thick, thin): segments whose larger radius is >= radius, and the others."""
    thick = [s for s in segs if max(s[2], s[3]) >= radius]
    thin = [s for s in segs if max(s[2], s[3]) < radius]
    return thick, thin


def splat(cv, segs: list[Segment], warp_fields) -> np.ndarray:
    """Volume fraction (0..1) of thin tubes on the canvas grid, by area-weighted trilinear splatting.

    Each segment is sampled every half voxel; each sample carries its share of the tube's volume. The
    deformation is inverted by a fixed-point iteration (it is smooth and a few mm at most).
    """
    out = np.zeros(cv.shape, dtype=np.float32)
    if not segs:
        return out
    a = np.array([s[0] for s in segs])
    b = np.array([s[1] for s in segs])
    ra = np.array([s[2] for s in segs])
    rb = np.array([s[3] for s in segs])
    length = np.linalg.norm(b - a, axis=1)
    step = 0.5 * cv.voxel_nominal
    counts = np.maximum(np.ceil(length / step).astype(int), 1)
    seg = np.repeat(np.arange(len(segs)), counts)
    k = np.arange(len(seg)) - np.repeat(np.cumsum(counts) - counts, counts)
    t = ((k + 0.5) / counts[seg])[:, None]
    p = a[seg] + t * (b[seg] - a[seg])
    r = ra[seg] + t[:, 0] * (rb[seg] - ra[seg])
    voxel_volume = float(np.prod(cv.spacing)) / cv.s**3  # nominal mm^3
    weight = math.pi * r**2 * (length / counts)[seg] / voxel_volume
    u = p.copy()
    for _ in range(3):  # undeformed position u with u + warp(u) = p
        u = p - np.stack([f(u[:, 0], u[:, 1], u[:, 2]) for f in warp_fields], axis=1)
    idx = ((u - cv.c) * cv.s - cv.origin) / cv.spacing - cv.offset  # continuous index x, y, z
    base = np.floor(idx).astype(int)
    frac = idx - base
    size = cv.size.astype(int)
    keep = np.all((base >= -1) & (base < size), axis=1)
    base, frac, weight = base[keep], frac[keep], weight[keep]
    if not len(base):
        return out
    lo = np.maximum(base.min(axis=0), 0)
    hi = np.minimum(base.max(axis=0) + 2, size)  # a box around the samples, exclusive
    n = hi - lo
    index, weights = [], []
    for corner in np.ndindex(2, 2, 2):
        i = base + corner - lo
        w = weight * np.prod(np.where(corner, frac, 1.0 - frac), axis=1)
        ok = np.all((i >= 0) & (i < n), axis=1)
        index.append((i[ok, 2] * n[1] + i[ok, 1]) * n[0] + i[ok, 0])
        weights.append(w[ok])
    acc = np.bincount(np.concatenate(index), weights=np.concatenate(weights), minlength=int(np.prod(n)))
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    out[box] = np.minimum(acc.reshape(n[2], n[1], n[0]), 1.0)
    return out


def fraction(cv, segs: list[Segment], warp_fields, thick_radius: float | None = None) -> np.ndarray:
    """Volume fraction of a whole tree on the canvas: thick segments drawn exactly (anti-aliased tube
    distance), thin ones splatted."""
    if thick_radius is None:
        thick_radius = 1.0 * cv.voxel_nominal
    thick, thin = split(segs, thick_radius)
    out = splat(cv, thin, warp_fields)
    blk, frac = cv.soft_tree([s[:4] for s in thick])
    if frac.size:
        np.maximum(out[blk], frac, out=out[blk])
    return out
