"""Where grids are made: the model's working grid for an input, an empty grid of a given size, and the
slab grids of super-resolution. Every task and the training data take their grids from here.

A grid is a SimpleITK image (size, spacing, origin, direction); its voxels may be empty.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import SimpleITK as sitk

from . import ctio

# Work on the input's own grid when its spacing is within this fraction of the model's working
# spacing on every axis: resampling would then cost more than it buys. Measured with the bundled 4 mm
# model on 5 mm-slice abdomen phantoms: upsampling 5 -> 4 mm makes three of every four slices linear
# blends of two, which the model "corrects" as if they were noise (denoising PSNR 24.6 dB, against 31.0
# dB on the native grid and 33.1 dB for the noisy input).
NATIVE_TOLERANCE = 0.3
# Synthesis has no input to keep: it samples on the working grid unless the requested grid is that grid
# to rounding (an absolute 1e-6 mm, its behaviour since it was written).
EXACT = 1e-6


def close_spacing(a: Sequence[float], b: Sequence[float], tolerance: float = NATIVE_TOLERANCE) -> bool:
    """Each spacing of `a` within `tolerance` x the matching spacing of `b` (relative)."""
    return all(abs(float(x) - float(y)) <= tolerance * float(y) for x, y in zip(a, b))


def same_spacing(a: Sequence[float], b: Sequence[float], tolerance: float = EXACT) -> bool:
    """Each spacing of `a` within `tolerance` mm of the matching spacing of `b` (absolute)."""
    return all(abs(float(x) - float(y)) <= tolerance for x, y in zip(a, b))


def working_grid(image: sitk.Image, spacing: Sequence[float], *, exact: bool = False) -> sitk.Image:
    """The image on the model's working grid (same extent, origin and direction, linear interpolation),
    or the image itself when its spacing is already within NATIVE_TOLERANCE of the working spacing
    (within EXACT mm with exact=True)."""
    close = same_spacing if exact else close_spacing
    if close(image.GetSpacing(), spacing):
        return image
    return ctio.resample_to_spacing(image, spacing, "linear")


def box_around(shape: Sequence[int], centre: Sequence[float], size: Sequence[int]) -> tuple[slice, ...]:
    """Slices of `size` voxels (at most `shape`) centred at `centre`, shifted to lie inside the volume;
    in the axis order of its arguments."""
    box = []
    for n, c, s in zip(shape, centre, size):
        s = min(int(s), int(n))
        start = int(np.clip(round(float(c) - s / 2.0), 0, n - s))
        box.append(slice(start, start + s))
    return tuple(box)


def centred_grid(size: Sequence[int], spacing: Sequence[float]) -> sitk.Image:
    """An empty float32 image of `size` (x, y, z) voxels centred on the physical origin."""
    image = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([-(n - 1) * s / 2.0 for n, s in zip(size, spacing)])
    return image


def slab_grid(image: sitk.Image, in_plane: tuple[float, float], n_thin: int) -> sitk.Image:
    """An empty grid over the input's slab stack (each of its slices the centre of a slab as thick as
    its spacing): in-plane spacing `in_plane` over the input's in-plane extent (as
    ctio.resample_to_spacing keeps it), n_thin slices tiling the slabs exactly."""
    nx, ny, nz = image.GetSize()
    sx, sy, sz = image.GetSpacing()
    size = [nx, ny] if close_spacing((sx, sy), in_plane, 1e-9) else [
        max(1, int(round(n * s / w))) for n, s, w in zip((nx, ny), (sx, sy), in_plane)
    ]
    spacing = [sx, sy] if size == [nx, ny] else list(in_plane)
    dz = nz * sz / n_thin
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction[:, 2] * (dz - sz) / 2.0
    grid = sitk.Image([int(size[0]), int(size[1]), int(n_thin)], sitk.sitkFloat32)
    grid.SetSpacing([float(spacing[0]), float(spacing[1]), float(dz)])
    grid.SetOrigin([float(o) for o in origin])
    grid.SetDirection(image.GetDirection())
    return grid


def thick_slices_grid(thick: sitk.Image, in_plane_of: sitk.Image) -> sitk.Image:
    """An empty grid with the in-plane lattice of `in_plane_of` and the slices of `thick` (its slice
    count, spacing, origin and direction): where super-resolution reads its measurement, so that the
    thick slices are resampled in plane only, never along z."""
    grid = sitk.Image([in_plane_of.GetSize()[0], in_plane_of.GetSize()[1], thick.GetSize()[2]], sitk.sitkFloat32)
    grid.SetSpacing([*in_plane_of.GetSpacing()[:2], thick.GetSpacing()[2]])
    grid.SetOrigin(thick.GetOrigin())
    grid.SetDirection(thick.GetDirection())
    return grid


class Orientation:
    """How a grid's voxel axes map onto the orientation the models were trained in (the phantoms':
    identity direction, i.e. axial slices in LPS voxel order): axis i (x, y, z) of the axial grid is
    axis perm[i] of the grid, reversed where flip[i]. Permutations and flips only: no voxel is
    interpolated, so going there and back returns every value and the grid itself exactly. An oblique
    direction gets the nearest permutation (the largest |cosine| on the diagonal)."""

    def __init__(self, grid: sitk.Image):
        import itertools

        direction = np.asarray(grid.GetDirection(), dtype=float).reshape(3, 3)  # columns: voxel axes
        self._direction = grid.GetDirection()
        self.perm = max(itertools.permutations(range(3)),
                        key=lambda p: sum(abs(direction[i, p[i]]) for i in range(3)))
        self.flip = tuple(bool(direction[i, self.perm[i]] < 0) for i in range(3))
        # numpy (z, y, x): axial numpy axis a is the grid's numpy axis 2 - perm[2 - a].
        self._axes = tuple(2 - self.perm[2 - a] for a in range(3))
        self._flipped = tuple(a for a in range(3) if self.flip[2 - a])

    @property
    def identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    def array_to_axial(self, array: np.ndarray) -> np.ndarray:
        """A (z, y, x) array on the grid as one on the axial grid (trailing three axes)."""
        lead = array.ndim - 3
        out = np.transpose(array, tuple(range(lead)) + tuple(lead + a for a in self._axes))
        return np.flip(out, tuple(lead + a for a in self._flipped)) if self._flipped else out

    def array_from_axial(self, array: np.ndarray) -> np.ndarray:
        lead = array.ndim - 3
        out = np.flip(array, tuple(lead + a for a in self._flipped)) if self._flipped else array
        back = np.argsort(self._axes)
        return np.transpose(out, tuple(range(lead)) + tuple(lead + int(a) for a in back))

    def to_axial(self, image: sitk.Image) -> sitk.Image:
        """The image on the axial grid (the same voxels and physical positions)."""
        if self.identity:
            return image
        size = image.GetSize()
        corner = [size[k] - 1 if self.flip[i] else 0 for i, k in enumerate(self.perm)]
        index = [0, 0, 0]
        for i, k in enumerate(self.perm):
            index[k] = corner[i]
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        new_direction = np.stack([direction[:, k] * (-1.0 if f else 1.0) for k, f in zip(self.perm, self.flip)], axis=1)
        out = sitk.GetImageFromArray(np.ascontiguousarray(self.array_to_axial(sitk.GetArrayViewFromImage(image))))
        out.SetSpacing([image.GetSpacing()[k] for k in self.perm])
        out.SetOrigin(image.TransformIndexToPhysicalPoint(index))
        out.SetDirection(new_direction.ravel().tolist())
        return out

    def from_axial(self, axial: sitk.Image, grid: sitk.Image | None = None) -> sitk.Image:
        """An image on the axial grid back in the axis order of the grid this Orientation was made
        from: on `grid` itself (copied exactly) when given, else on the same voxels of the axial grid
        (a grid the task made, e.g. super-resolution's thin slices)."""
        if self.identity:
            return axial
        out = sitk.GetImageFromArray(np.ascontiguousarray(self.array_from_axial(sitk.GetArrayViewFromImage(axial))))
        if grid is not None:
            out.CopyInformation(grid)
            return out
        spacing = [0.0, 0.0, 0.0]
        for i, k in enumerate(self.perm):
            spacing[k] = axial.GetSpacing()[i]
        size = axial.GetSize()
        out.SetSpacing(spacing)
        out.SetOrigin(axial.TransformIndexToPhysicalPoint([size[i] - 1 if f else 0 for i, f in enumerate(self.flip)]))
        out.SetDirection(self._direction)
        return out
