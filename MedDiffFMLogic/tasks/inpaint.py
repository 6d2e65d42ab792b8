"""Lesion inpainting or removal with RePaint: the region under the mask is redrawn by the diffusion
model, conditioned on everything around it; every voxel outside the mask keeps the input's value
bit for bit.

With the base model alone (the default) the model fills the region with what it considers normal
tissue: lesion removal. With the lesion ControlNet (`--controlnet meddifffm-lesion-demo`) it draws a
lesion shaped by the mask there, the paper's lesion inpainting.

How the result is composed:
- The mask (any grid overlapping the image, nearest-neighbour onto the input grid) is the set M of
  input voxels that may change.
- The model works on its working grid, in a box around M wide enough to give the windows context
  (M's bounding box plus half a window on each side, at least one window). On that grid the generated
  region is M resampled and dilated by one voxel, so that every input voxel in M interpolates from
  generated voxels only.
- RePaint runs in the box: after each step the known part is replaced by the input diffused to that
  step; at the end it is the input itself.
- Windows of the box that contain no voxel of the generated region are not run through the network:
  RePaint's update is voxel by voxel, the windows covering a generated voxel all contain it (and see
  x_t, not other windows' estimates), and every voxel outside the region is replaced by the known
  image after each step. So the generated voxels do not depend on those windows, and skipping them
  changes nothing (see Testing/test_skip_windows.py). The constant clean image the estimator assumes
  on voxels only skipped windows cover is therefore irrelevant; it is left at its default.
- Back on the input grid: output = input outside M, and the generated image (resampled linearly)
  inside M. The boundary is hard on the input grid; RePaint's resampling is what makes it seamless.
- Integer inputs (e.g. int16 CT) are written in their own type, generated values rounded.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from .. import ctio
from ..algorithms import repaint, repaint_timesteps
from ..progress import SILENT, Progress
from ..settings.inpaint import InpaintConfig  # noqa: F401 (the task's config, declared with its settings)
from ..controls import lesion_control
from ..regions import check_region
from ..sampling import WindowConfig, make_generator
from .common import LoadedModel, check_outputs, check_positive, load_model, report_change, require_controlnet
from .prepare import mask_on_grid, prepare_task
from .masks import read_mask


def regenerate(
    image: sitk.Image,
    region_mask: np.ndarray,
    model: LoadedModel,
    *,
    region: str,
    steps: int,
    jump_length: int,
    resamplings: int,
    eta: float,
    seed: int,
    windows: WindowConfig,
    anatomy: str | None = None,
    control_mask: np.ndarray | None = None,
    progress: Progress = SILENT,
    stage: str = "inpaint",
) -> np.ndarray:
    """Redraw `region_mask` (bool, input grid) of `image` with RePaint; returns the generated HU values on
    the input grid (meaningful inside region_mask; the caller composes). control_mask (input grid) is
    the lesion ControlNet's mask, when the model carries one."""
    check_region(region, auto=True)
    check_positive(steps=steps, jump_length=jump_length, resamplings=resamplings)
    control = None
    if control_mask is not None:
        # The ControlNet sees the lesion's own shape (half-covered working voxels in), not the
        # generous region to generate.
        control = lambda work, _region: lesion_control(mask_on_grid(control_mask, image, work, 0.5))  # noqa: E731
    prepared = prepare_task(model, region, windows, image=image, anatomy=anatomy, control=control,
                            generate=region_mask, progress=progress)
    generator = make_generator(seed)
    timesteps = repaint_timesteps(steps, jump_length, resamplings)
    x = repaint(prepared.estimator, model.alphas_cumprod, prepared.y, prepared.generate, timesteps, generator,
                eta=eta, progress=progress, stage=stage)
    return ctio.to_array(prepared.result(x))


def compose(image: sitk.Image, generated: np.ndarray, region_mask: np.ndarray, pixel_id: int | None = None) -> sitk.Image:
    """Input outside the mask (bit-identical), generated inside; in the input's pixel type when it is an
    integer type (generated values rounded and clipped to that type)."""
    original = sitk.GetArrayFromImage(image)
    out = original.astype(np.float64, copy=True)
    out[region_mask] = generated[region_mask]
    result = ctio.from_array(out.astype(np.float32), image)
    if pixel_id is not None and pixel_id not in (sitk.sitkFloat32, sitk.sitkFloat64):
        info = np.iinfo(sitk.GetArrayViewFromImage(sitk.Image(1, 1, 1, pixel_id)).dtype)
        out[region_mask] = np.clip(np.round(out[region_mask]), info.min, info.max)
        result = sitk.Cast(ctio.from_array(out, image), pixel_id)
    return result


def input_pixel_id(path: str | os.PathLike) -> int | None:
    """The stored pixel type of an image file (None for a DICOM folder or when it cannot be told)."""
    if os.path.isdir(path):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader.GetPixelID()


def run(config: InpaintConfig, input: str | os.PathLike, mask: str | os.PathLike, output: str | os.PathLike,
        change_mask: str | os.PathLike | None = None, progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_outputs(input, {"output": output, "change mask": change_mask})
    check_outputs(mask, {"output": output, "change mask": change_mask})
    image = ctio.read_ct(input)
    region_mask = read_mask(mask, image, config.label)
    model = load_model(config.model, config.device, config.controlnet, estimator=estimator)
    if config.controlnet is not None:
        require_controlnet(model, "lesion")
    generated = regenerate(
        image, region_mask, model, region=config.region, steps=config.steps, jump_length=config.jump_length,
        resamplings=config.resamplings, eta=config.eta, seed=config.seed, windows=config.windows,
        anatomy=config.anatomy, control_mask=region_mask if config.controlnet else None, progress=progress,
    )
    result = compose(image, generated, region_mask, input_pixel_id(input))
    report_change(progress, image, result)
    outputs = {"image": str(ctio.write_image(result, output))}
    if change_mask is not None:
        outputs["change_mask"] = str(ctio.write_image(ctio.from_array(region_mask.astype(np.uint8), image), change_mask))
    return outputs
