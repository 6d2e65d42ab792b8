"""Resampling onto another grid or spacing, and comparing grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-6) -> bool:
    """True when a and b have the same size and, within tol (absolute), the same spacing, origin and direction."""
    return (
        a.GetDimension() == b.GetDimension()
        and a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=tol)
    )


def _interpolator(name: str) -> int:
    try:
        return INTERPOLATORS[name]
    except KeyError:
        raise InputError(
            f"unknown interpolator {name!r}; choose one of {', '.join(INTERPOLATORS)}"
        ) from None


def _output_type(image: sitk.Image, interpolator: str) -> int:
    # Interpolated values of an integer image are fractional; labels keep their type.
    if interpolator != "nearest" and image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return sitk.sitkFloat32
    return image.GetPixelID()


def _default_value(image: sitk.Image, interpolator: str, default_value: float | None) -> float:
    if default_value is not None:
        return float(default_value)
    if interpolator == "nearest":
        return 0.0
    # Outside the scan is air: the image's minimum.
    return float(sitk.GetArrayViewFromImage(image).min())


def _resample(image, size, spacing, origin, direction, interpolator, default_value):
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in size])
    f.SetOutputSpacing([float(s) for s in spacing])
    f.SetOutputOrigin([float(o) for o in origin])
    f.SetOutputDirection([float(d) for d in direction])
    f.SetTransform(sitk.Transform())
    f.SetInterpolator(_interpolator(interpolator))
    f.SetDefaultPixelValue(_default_value(image, interpolator, default_value))
    f.SetOutputPixelType(_output_type(image, interpolator))
    return f.Execute(image)


def resample_to_spacing(
    image: sitk.Image, spacing: Sequence[float], interpolator: str = "linear"
) -> sitk.Image:
    """Resample onto a grid of the given spacing with the same origin, direction and physical extent.

    size_new = round(size * spacing_old / spacing_new), at least 1. Outside the input the value is the
    image's minimum (air) for "linear" and "bspline", 0 for "nearest".
    """
    _interpolator(interpolator)
    spacing = [float(s) for s in spacing]
    if len(spacing) != image.GetDimension() or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(
            f"spacing {spacing} is invalid; give {image.GetDimension()} positive numbers in mm"
        )
    size = [
        max(1, int(round(n * old / new)))
        for n, old, new in zip(image.GetSize(), image.GetSpacing(), spacing)
    ]
    return _resample(
        image, size, spacing, image.GetOrigin(), image.GetDirection(), interpolator, None
    )


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    interpolator: str = "linear",
    default_value: float | None = None,
) -> sitk.Image:
    """Resample image onto the reference's exact grid (size, spacing, origin, direction).

    When the grids already agree within 1e-9 the voxels are returned unchanged (bit-identical), with
    the reference's geometry. default_value None means the image's minimum, or 0 for "nearest".
    """
    _interpolator(interpolator)
    if same_grid(image, reference, tol=1e-9):
        out = sitk.Cast(image, _output_type(image, interpolator))
        out.CopyInformation(reference)
        return out
    return _resample(
        image,
        reference.GetSize(),
        reference.GetSpacing(),
        reference.GetOrigin(),
        reference.GetDirection(),
        interpolator,
        default_value,
    )
