"""SimpleITK images <-> numpy arrays (z, y, x) with the geometry kept."""

from __future__ import annotations


import numpy as np
import SimpleITK as sitk


def to_array(image: sitk.Image) -> np.ndarray:
    """The voxels as a (z, y, x) float32 array (a copy)."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("to_array needs a scalar image")
    return np.array(sitk.GetArrayViewFromImage(image), dtype=np.float32, copy=True)


def from_array(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding array (z, y, x) on the reference's grid (spacing, origin, direction)."""
    array = np.asarray(array)
    expected = tuple(reversed(reference.GetSize()))
    if array.shape != expected:
        raise ValueError(f"array shape {array.shape} does not match the reference's {expected} (z, y, x)")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    image.CopyInformation(reference)
    return image
