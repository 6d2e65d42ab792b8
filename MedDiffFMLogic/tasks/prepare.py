"""The one place that prepares a task for sampling: every task (denoise, anomaly, inpaint, lesion,
superres, synthesize) calls `prepare_task`, which

1. checks the region, and brings the input (or the target grid) to the orientation the models were
   trained in (grids.Orientation: axial, LPS voxel order; permutation and flips only), which
   `TaskInputs.result` undoes exactly; resolves `--region auto` (the default) to the region detected
   on the input, or on the anatomy label map when there is no input (regiondetect.resolve_region, which
   also warns when a given region contradicts the scan); every later use takes `TaskInputs.region`,
2. chooses the working grid (the input resampled to the model's working spacing, or the input itself
   when its spacing is close enough: grids.working_grid),
3. puts the input on that grid in the network's units (y),
4. reads the anatomy condition onto that grid,
5. finds the windows wholly in air (--skip-air),
6. gathers the conditions, makes the whole-volume noise estimator and says how many windows it runs.

What a task samples with is the estimator `model.estimator` (a `SlidingWindowEstimator` unless a
benchmark or a test hands `load_model` another): swapping it needs no patching of task modules.
`TaskInputs.result` brings the sampler's output back to HU on the grid the task returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .. import ctio
from ..errors import InputError
from ..grids import Orientation, working_grid
from ..network import whole_volume_axes
from ..progress import SILENT, Progress
from ..regiondetect import resolve_region
from ..regions import check_region, region_index
from ..sampling import Conditions, SlidingWindowEstimator, WindowConfig
from ..units import clamp_physical, physical_range, to_unit_tensor, unit_to_image
from .common import LoadedModel, air_skip, crop_box, read_anatomy, window_report


@dataclass
class TaskInputs:
    work: sitk.Image  # the working grid (holding the input in HU when the task has one)
    target: sitk.Image  # the grid the result goes back to (the input's, or the requested output grid)
    y: torch.Tensor | None  # the input on the working grid (cropped to `box`) in [-1, 1], (1, 1, D, H, W)
    estimator: SlidingWindowEstimator
    region: str  # the region the task runs with (`auto` resolved): its HU window and condition
    box: tuple[slice, slice, slice] | None = None  # the part of the working grid sampled (inpaint, lesion)
    generate: torch.Tensor | None = None  # (1, 1, D, H, W) bool in the box: the voxels to be generated
    input: sitk.Image | None = None  # the input in HU, in the models' orientation (for estimates made on it)
    returned: sitk.Image | None = None  # the caller's own target grid (target is it in the models' orientation)
    orientation: Orientation | None = None  # from the caller's target grid to the models' orientation

    @property
    def native(self) -> bool:
        """The model works on the target grid itself."""
        return self.work is self.target

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.estimator.shape)

    def result(self, x: torch.Tensor) -> sitk.Image:
        """The sampler's output x ((1, 1, D, H, W), in [-1, 1]) as HU on the target grid: pasted into the
        whole working grid when sampled in a box, then resampled linearly when the grids differ, clamped
        to physical CT values (units.PHYSICAL_HU, or the input's own range where it is wider), and put
        back in the caller's axis order."""
        if self.box is not None:
            full = to_unit_tensor(self.work, self.region, x.device)
            full[(slice(None), slice(None), *self.box)] = x
            x = full
        image = unit_to_image(x, self.work, self.region)
        image = image if self.native else ctio.resample_onto(image, self.target, "linear")
        image = clamp_physical(image, physical_range(self.input))
        if self.orientation is None:
            return image
        return self.orientation.from_axial(image, self.returned)


def prepare_task(
    model: LoadedModel,
    region: str,
    windows: WindowConfig,
    *,
    image: sitk.Image | None = None,
    target: sitk.Image | None = None,
    work: sitk.Image | None = None,
    exact_grid: bool = False,
    measurement: sitk.Image | None = None,
    anatomy: str | sitk.Image | None = None,
    skip_air: bool = False,
    control: torch.Tensor | Callable[[sitk.Image, str], torch.Tensor] | None = None,
    generate: np.ndarray | None = None,
    progress: Progress = SILENT,
) -> TaskInputs:
    """Everything a task samples with.

    image: the input CT in HU (None: synthesis). target: the grid the result returns to (default: the
    image). work: an empty working grid when the task builds its own (super-resolution's slab grid); by
    default the image (or, without one, the target) on the model's working spacing, kept as it is
    within grids.NATIVE_TOLERANCE (relative), or within grids.EXACT mm with exact_grid.
    measurement: the HU image whose [-1, 1] values are y (default: the input on the working grid).
    control: the ControlNet input on the working grid, (C, D, H, W), or a function of the working grid
    and the (resolved) region that makes it. generate: bool (z, y, x) on the input grid, the voxels to
    redraw (inpaint, lesion): on the working grid it becomes every working voxel an input voxel of it
    interpolates from, and only a box around it is sampled (crop_box), with only the windows holding
    some of it.

    Orientation: the network runs in voxel order, so a coronal or sagittal stack (or one with reversed
    axes) would be fed to it sideways. Without a caller's working grid, the input, the target and the
    mask to generate are permuted and flipped into the models' orientation here, and `result` permutes
    the output back onto the caller's grid (bit-exact geometry). A caller that hands its own `work`
    (super-resolution, whose slab axis is the input's z) orients its input itself."""
    check_region(region, auto=True)
    target = image if target is None else target
    returned = target
    orientation = None
    if work is None:
        image, target, generate, orientation = to_axial(image, target, generate)
    region = resolve_region(region, image, anatomy, progress)
    holds_input = work is None and image is not None  # the working grid is the input (resampled)
    if work is None:
        work = working_grid(image if image is not None else target, model.card.working_spacing, exact=exact_grid)
    input_on_work = None
    if image is not None:
        input_on_work = work if holds_input else ctio.resample_onto(image, work, "linear")
    if measurement is None:
        measurement = input_on_work
    y = None if measurement is None else to_unit_tensor(measurement, region, model.device)
    anatomy_t = read_anatomy(anatomy, work, model.net.config.anatomy_bits)
    if callable(control):
        control = control(work, region)
    air = air_skip(input_on_work if skip_air else None, region)
    shape = tuple(reversed(work.GetSize()))
    box = axes = unknown = None
    if generate is not None:
        on_work = generated_voxels(generate, image, work)
        edge = windows.size or model.net.config.default_window
        box = crop_box(on_work, margin=edge // 2, minimum=edge)
        shape = tuple(b.stop - b.start for b in box)
        y = y[(slice(None), slice(None), *box)]
        unknown = torch.from_numpy(on_work[box])[None, None].to(model.device)
        anatomy_t = None if anatomy_t is None else anatomy_t[box]
        control = None if control is None else control[(slice(None), *box)].contiguous()
        axes = tuple(a[b] for a, b in zip(whole_volume_axes(on_work.shape), box))
        # Windows without a voxel to generate do not change the result (inpaint's docstring).
        air = {"active": unknown[0, 0]}
    conditions = Conditions(region=region_index(region), anatomy=anatomy_t, axes=axes, control=control, **air)
    factory = model.estimator or SlidingWindowEstimator
    estimator = factory(model.net, shape, conditions, windows, model.device, alphas_cumprod=model.alphas_cumprod)
    window_report(progress, estimator)
    return TaskInputs(work, target, y, estimator, region, box, unknown, image, returned, orientation)



def to_axial(image: sitk.Image | None, target: sitk.Image, generate: np.ndarray | None):
    """The input, the target grid and the mask to generate in the models' orientation (permutations and
    flips only), with the target's Orientation to undo it (None when the target is axial already)."""
    orientation = Orientation(target)
    if orientation.identity:
        return image, target, generate, None
    same = image is target
    if image is not None:
        # The mask is on the input's grid; the input may have a grid of its own (never today).
        image_orientation = orientation if same else Orientation(image)
        if generate is not None:
            generate = np.ascontiguousarray(image_orientation.array_to_axial(generate))
        image = image_orientation.to_axial(image)
    target = image if same else orientation.to_axial(target)
    return image, target, generate, orientation

def generated_voxels(mask: np.ndarray, image: sitk.Image, work: sitk.Image) -> np.ndarray:
    """The working voxels to generate for the input voxels `mask`: on the input's own grid the mask
    itself; otherwise every working voxel within the linear interpolation's reach of the mask."""
    if work is image:
        on_work = mask
    else:
        # A full 3x3x3 neighbourhood: the linear interpolation back onto an input voxel reads the
        # 2x2x2 working voxels around it, diagonal ones included.
        on_work = ndimage.binary_dilation(mask_on_grid(mask, image, work, 1e-3), structure=np.ones((3, 3, 3), bool))
    if not on_work.any():
        raise InputError("the mask covers no voxel of the working grid")
    return on_work


def mask_on_grid(mask: np.ndarray, image: sitk.Image, grid: sitk.Image, level: float) -> np.ndarray:
    """A bool (z, y, x) mask on the image's grid, on `grid`: the voxels where its linear interpolation
    exceeds `level` (the mask itself when grid is the image)."""
    if grid is image:
        return mask
    m = ctio.from_array(mask.astype(np.float32), image)
    return ctio.to_array(ctio.resample_onto(m, grid, "linear", 0.0)) > level
