"""Implicit shapes and their rasterisation: paths, smooth random fields, vessel trees and the canvas.

The canvas holds the grid's deformed nominal coordinates and the label, HU and texture volumes; every
shape is evaluated at the physical voxel centres, so another spacing over the same field of view gives
the same anatomy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import CubicSpline

def _unit(v):
    v = np.asarray(v, dtype=float)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _rotation(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation matrix from angles in degrees about z (yaw), y (pitch) and x (roll)."""
    a, b, c = np.radians([yaw, pitch, roll])
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(c), -math.sin(c)], [0, math.sin(c), math.cos(c)]])
    return rz @ ry @ rx


def _path(ctrl, radii, step: float = 4.0):
    """Points and radii along a smooth curve through control points (chord-length cubic spline)."""
    ctrl = np.asarray(ctrl, dtype=float)
    radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(ctrl),))
    d = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(ctrl, axis=0), axis=1))]
    n = max(int(math.ceil(d[-1] / step)) + 1, 2)
    t = np.linspace(0.0, d[-1], n)
    if len(ctrl) >= 3:
        pts = CubicSpline(d, ctrl, bc_type="natural")(t)
    else:
        pts = np.stack([np.interp(t, d, ctrl[:, k]) for k in range(3)], axis=1)
    return pts, np.interp(t, d, radii)


class _Fourier:
    """A smooth random scalar field: sum of random plane cosines, unit variance, analytic in space."""

    def __init__(self, rng, n: int, wavelength: tuple[float, float]):
        dirs = rng.normal(size=(n, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        lam = rng.uniform(wavelength[0], wavelength[1], size=n)
        self.k = dirs * (2 * np.pi / lam)[:, None]
        self.phase = rng.uniform(0, 2 * np.pi, size=n)
        self.amp = math.sqrt(2.0 / n)

    def __call__(self, x, y, z):
        out = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y), np.shape(z)), dtype=np.float32)
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out += np.cos(np.float32(kx) * x + np.float32(ky) * y + np.float32(kz) * z + np.float32(ph))
        out *= np.float32(self.amp)
        return out


# ---------------------------------------------------------------------------------------------------
# The canvas: grid, deformed nominal coordinates, label and HU volumes
# ---------------------------------------------------------------------------------------------------


_EMPTY_BOX = (slice(0, 0), slice(0, 0), slice(0, 0))
_EMPTY_FIELD = np.zeros((0, 0, 0), dtype=np.float32)


def _coarse_axis(n: int, stride: int) -> np.ndarray:
    """Indices of a coarse sub-grid along an axis of n points (every stride-th point and the last one)."""
    idx = np.arange(0, n, max(int(stride), 1))
    return idx if idx[-1] == n - 1 else np.r_[idx, n - 1]


def _lerp_matrix(n: int, idx: np.ndarray) -> np.ndarray:
    """(n, len(idx)) weights that interpolate linearly from the coarse points idx to all n points."""
    w = np.zeros((n, len(idx)), dtype=np.float32)
    if len(idx) == 1:
        w[:, 0] = 1.0
        return w
    j = np.clip(np.searchsorted(idx, np.arange(n), side="right") - 1, 0, len(idx) - 2)
    t = (np.arange(n) - idx[j]) / (idx[j + 1] - idx[j])
    w[np.arange(n), j] = 1.0 - t
    w[np.arange(n), j + 1] = t
    return w


def _upsample(coarse: np.ndarray, idx) -> np.ndarray:
    """Trilinear upsampling of a (z, y, x) coarse grid sampled at the indices idx (z, y, x lists)."""
    out = coarse
    for axis, (n, ix) in enumerate(idx):
        out = np.moveaxis(np.tensordot(_lerp_matrix(n, ix), out, axes=(1, axis)), 0, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


class _Canvas:
    """The grid (possibly shifted by a sub-voxel offset), its deformed nominal coordinates, and the
    label, HU and texture-amplitude volumes being painted."""

    def __init__(self, config, scale: float, centre, warp_fields, warp_amp: float, offset=(0.0, 0.0, 0.0)):
        self.size = np.array(config.size, dtype=int)  # x, y, z
        self.spacing = np.array(config.spacing, dtype=float)
        self.origin = -(self.size - 1) / 2.0 * self.spacing
        self.offset = np.asarray(offset, dtype=float)  # sub-voxel shift (voxels, x y z) of this sub-grid
        self.shape = (int(self.size[2]), int(self.size[1]), int(self.size[0]))  # z, y, x
        self.s = float(scale)
        self.c = np.asarray(centre, dtype=float)
        self.margin = warp_amp  # nominal mm the deformation can move a point
        self.warp_fields = warp_fields
        # nominal (undeformed) coordinate of each index along each axis
        self.axes = [
            ((self.origin[k] + (np.arange(self.size[k]) + self.offset[k]) * self.spacing[k]) / self.s
             + self.c[k]).astype(np.float32)
            for k in range(3)
        ]
        shape = self.shape
        self.X = np.broadcast_to(self.axes[0][None, None, :], shape).astype(np.float32)
        self.Y = np.broadcast_to(self.axes[1][None, :, None], shape).astype(np.float32)
        self.Z = np.broadcast_to(self.axes[2][:, None, None], shape).astype(np.float32)
        # the deformation is smooth (wavelengths >= 260 mm): evaluate it on a coarse grid, interpolate
        idx = self._coarse(60.0)
        cx, cy, cz = (self.axes[0][idx[2][1]][None, None, :], self.axes[1][idx[1][1]][None, :, None],
                      self.axes[2][idx[0][1]][:, None, None])
        for arr, field in zip((self.X, self.Y, self.Z), warp_fields):
            arr += _upsample(field(cx, cy, cz), idx)
        self.lab = np.zeros(shape, dtype=np.uint8)
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.tex = np.zeros(shape, dtype=np.float32)
        self.voxel_nominal = float(self.spacing.min()) / self.s
        self._fields = {}

    def _coarse(self, step_mm: float):
        """(n, coarse indices) per axis (z, y, x) for a sub-grid about step_mm nominal apart."""
        out = []
        for k in (2, 1, 0):
            stride = int(step_mm * self.s / self.spacing[k])
            out.append((int(self.size[k]), _coarse_axis(int(self.size[k]), stride)))
        return out

    def smooth(self, field, min_wavelength: float) -> np.ndarray:
        """A smooth random field over the whole canvas at the deformed coordinates, evaluated on a coarse
        grid (an eighth of the shortest wavelength apart) and interpolated; computed once per canvas."""
        key = id(field)
        if key not in self._fields:
            idx = self._coarse(min_wavelength / 8.0)
            sub = np.ix_(idx[0][1], idx[1][1], idx[2][1])
            self._fields[key] = _upsample(field(self.X[sub], self.Y[sub], self.Z[sub]), idx)
        return self._fields[key]

    # index box of a nominal-coordinate box (with the deformation's margin), or None when outside
    def box(self, lo, hi):
        lo = np.asarray(lo, dtype=float) - self.margin
        hi = np.asarray(hi, dtype=float) + self.margin
        sl = []
        for k in range(3):
            i0 = ((lo[k] - self.c[k]) * self.s - self.origin[k]) / self.spacing[k] - self.offset[k]
            i1 = ((hi[k] - self.c[k]) * self.s - self.origin[k]) / self.spacing[k] - self.offset[k]
            a = max(int(math.floor(i0)) - 1, 0)
            b = min(int(math.ceil(i1)) + 2, int(self.size[k]))
            if a >= b:
                return None
            sl.append(slice(a, b))
        return (sl[2], sl[1], sl[0])

    def coords(self, sl):
        return self.X[sl], self.Y[sl], self.Z[sl]

    def put(self, sl, mask, label=None, hu=None, tex=None):
        if sl is None:
            return
        if label is not None:
            self.lab[sl][mask] = label
        for target, value in ((self.hu, hu), (self.tex, tex)):
            if value is None:
                continue
            if np.ndim(value) == 3:  # a value per voxel of the box
                target[sl][mask] = value[mask]
            else:  # a scalar, or values already picked by the mask
                target[sl][mask] = value

    def ellipsoid(self, centre, semi, rot=None, p=2.0):
        """(box, normalised radius) of a superellipsoid; radius < 1 inside."""
        centre = np.asarray(centre, dtype=float)
        semi = np.asarray(semi, dtype=float)
        ext = float(semi.max()) if rot is not None else semi
        sl = self.box(centre - ext, centre + ext)
        if sl is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        X, Y, Z = self.coords(sl)
        dx, dy, dz = X - np.float32(centre[0]), Y - np.float32(centre[1]), Z - np.float32(centre[2])
        if rot is not None:
            r = np.asarray(rot, dtype=np.float32)
            dx, dy, dz = (
                r[0, 0] * dx + r[1, 0] * dy + r[2, 0] * dz,
                r[0, 1] * dx + r[1, 1] * dy + r[2, 1] * dz,
                r[0, 2] * dx + r[1, 2] * dy + r[2, 2] * dz,
            )
        if p == 2.0:
            rho = (dx / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dz / semi[2]) ** 2
            return sl, np.sqrt(rho)
        rho = np.abs(dx / semi[0]) ** p + np.abs(dy / semi[1]) ** p + np.abs(dz / semi[2]) ** p
        return sl, rho ** (1.0 / p)

    def column(self, zk, cx, cy, a, b, p=2.0, zlim=None):
        """(box, normalised radius) of a superelliptic column whose section varies along z."""
        zk = np.asarray(zk, float)
        cx, cy, a, b = (np.broadcast_to(np.asarray(v, float), zk.shape) for v in (cx, cy, a, b))
        z0, z1 = zlim if zlim is not None else (zk[0], zk[-1])
        lo = (float((cx - a).min()), float((cy - b).min()), z0)
        hi = (float((cx + a).max()), float((cy + b).max()), z1)
        sl = self.box(lo, hi)
        if sl is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        X, Y, Z = self.coords(sl)
        zc = np.clip(Z, zk[0], zk[-1])
        dx = np.abs(X - np.interp(zc, zk, cx).astype(np.float32)) / np.interp(zc, zk, a).astype(np.float32)
        dy = np.abs(Y - np.interp(zc, zk, cy).astype(np.float32)) / np.interp(zc, zk, b).astype(np.float32)
        rho = (dx**p + dy**p) ** (1.0 / p)
        rho[(Z < z0) | (Z > z1)] = np.inf
        return sl, rho

    def tube(self, pts, radii):
        """(box, normalised distance d / r) to a tube along a polyline; < 1 inside."""
        pts = np.asarray(pts, dtype=float)
        radii = np.broadcast_to(np.asarray(radii, dtype=float), (len(pts),))
        rmax = float(radii.max())
        blk = self.box(pts.min(axis=0) - rmax, pts.max(axis=0) + rmax)
        if blk is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        nd = np.full(tuple(s.stop - s.start for s in blk), np.inf, dtype=np.float32)
        for i in range(len(pts) - 1):
            self._segment(blk, nd, pts[i], pts[i + 1], radii[i], radii[i + 1])
        return blk, nd

    def _segment(self, blk, nd, a, b, ra, rb, soft=None):
        r = max(ra, rb)
        sl = self.box(np.minimum(a, b) - r, np.maximum(a, b) + r)
        if sl is None:
            return
        sl = tuple(slice(max(s.start, B.start), min(s.stop, B.stop)) for s, B in zip(sl, blk))
        if any(s.start >= s.stop for s in sl):
            return
        local = tuple(slice(s.start - B.start, s.stop - B.start) for s, B in zip(sl, blk))
        X, Y, Z = self.coords(sl)
        ab = (b - a).astype(np.float32)
        L2 = float(ab @ ab) or 1e-6
        px, py, pz = X - np.float32(a[0]), Y - np.float32(a[1]), Z - np.float32(a[2])
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / np.float32(L2), 0.0, 1.0)
        d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
        rr = np.float32(ra) + t * np.float32(rb - ra)
        if soft is None:
            np.minimum(nd[local], d / rr, out=nd[local])
        else:  # anti-aliased fill fraction; thin vessels keep their cross-section area
            reff = np.maximum(rr, np.float32(soft))
            w = np.minimum((rr / reff) ** 2, 1.0)
            frac = np.clip((reff - d) / np.float32(soft) + 0.5, 0.0, 1.0) * w
            np.maximum(nd[local], frac, out=nd[local])

    def soft_tree(self, segs):
        """(box, fill fraction in [0, 1]) of a vessel tree, anti-aliased at the voxel size."""
        if not segs:
            return _EMPTY_BOX, _EMPTY_FIELD
        p = np.array([s[0] for s in segs] + [s[1] for s in segs])
        rmax = max(s[2] for s in segs)
        blk = self.box(p.min(axis=0) - rmax, p.max(axis=0) + rmax)
        if blk is None:
            return _EMPTY_BOX, _EMPTY_FIELD
        frac = np.zeros(tuple(s.stop - s.start for s in blk), dtype=np.float32)
        soft = 0.6 * self.voxel_nominal
        for a, b, ra, rb in segs:
            self._segment(blk, frac, a, b, ra, rb, soft=soft)
        return blk, frac

