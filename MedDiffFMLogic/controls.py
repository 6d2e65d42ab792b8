"""What the tasks and training share about ControlNet inputs: the control volumes c_t, and the
degradation that turns a CT into a super-resolution input (thick slabs). Training builds its control
volumes with these same functions, so what a ControlNet learns is what a task feeds it.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch

from . import ctio
from .errors import InputError
from .regions import hu_to_unit


def lesion_control(mask: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Lesion ControlNet input c_t: the (D, H, W) lesion mask as one channel, lesion +1, elsewhere -1."""
    mask = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask).bool()
    return (mask.float() * 2.0 - 1.0)[None]


def superres_control(low_res: sitk.Image, high_res_grid: sitk.Image, region: str) -> torch.Tensor:
    """Super-resolution ControlNet input c_t: the low-resolution CT linearly interpolated onto the
    high-resolution working grid, in the region's [-1, 1] window, as (1, D, H, W)."""
    on_grid = ctio.resample_onto(low_res, high_res_grid, "linear")
    return torch.from_numpy(hu_to_unit(ctio.to_array(on_grid), region).astype(np.float32))[None]


def slab_average(image: sitk.Image, factor: int, partial: str = "drop") -> sitk.Image:
    """Thick slices: each the average of `factor` consecutive slices along z, placed at the slab's
    centre with spacing factor x dz, as a scanner with `factor` times thicker slices records the same
    scan. A trailing partial slab is dropped (partial="drop": the demo's and benchmarks' inputs, so
    every thick slice is a whole slab) or completed by repeating the last slice (partial="pad":
    training's control volumes, which must cover every slice of the working grid)."""
    array = ctio.to_array(image)
    n = array.shape[0]
    if partial == "drop":
        slabs = n // factor
        if slabs < 2:
            raise InputError(f"the volume has too few slices for slabs of {factor}")
        thick = array[: slabs * factor].reshape(slabs, factor, *array.shape[1:]).mean(axis=1)
    elif partial == "pad":
        slabs = -(-n // factor)
        padded = np.concatenate([array, np.repeat(array[-1:], slabs * factor - n, axis=0)], axis=0)
        thick = padded.reshape(slabs, factor, *array.shape[1:]).mean(axis=1, dtype=np.float64)
    else:
        raise ValueError(f"partial must be 'drop' or 'pad', got {partial!r}")
    # The sums differ in the last bit (float32 for "drop", float64 for "pad"): each is what its caller has
    # always computed, so the demo's, the benchmarks' and training's inputs stay bit for bit as they were.
    out = sitk.GetImageFromArray(thick.astype(np.float32))
    spacing = image.GetSpacing()
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    # the first slab's centre sits (factor - 1) / 2 slices above the first slice, along the image's z axis
    out.SetOrigin(tuple(np.asarray(image.GetOrigin()) + direction[:, 2] * spacing[2] * (factor - 1) / 2.0))
    out.SetSpacing((spacing[0], spacing[1], spacing[2] * factor))
    out.SetDirection(image.GetDirection())
    return out


def lowres_volume(image: sitk.Image, factor: int) -> sitk.Image:
    """Training's thick-slice version of a working-grid CT: slab_average with the last slab padded."""
    return slab_average(image, factor, partial="pad")
