"""Lesion generation (the paper's ControlNet task): a lesion shaped by the user's mask is drawn into
the scan by the base model steered by the lesion ControlNet, with RePaint keeping the rest.

- The ControlNet's condition c_t is the lesion mask itself (`controls.lesion_control`: +1 inside, -1
  outside), on the working grid.
- The region RePaint redraws is the mask grown by `margin_mm` (default 3 mm, measured in physical
  distance on the input grid, so anisotropic voxels are handled): the lesion's rim and the tissue just
  around it may blend, which a hard cut at the mask's edge would not allow.
- Every input voxel farther than `margin_mm` from the mask is bit-identical to the input; the voxels
  allowed to change are written with --change-mask.
- The rest (working grid, context box around the region, RePaint schedule, composition, integer
  pixel types) is inpainting's: `inpaint.regenerate` and `inpaint.compose`.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .. import ctio
from ..errors import InputError
from ..progress import SILENT, Progress
from ..settings.lesion import LesionConfig  # noqa: F401 (the task's config, declared with its settings)
from .common import LoadedModel, check_outputs, load_model, report_change, require_controlnet
from .inpaint import compose, input_pixel_id, regenerate
from .masks import read_mask


def grow(mask: np.ndarray, spacing_xyz, margin_mm: float) -> np.ndarray:
    """The voxels within margin_mm (physical distance between voxel centres) of the mask."""
    if margin_mm <= 0:
        return mask.copy()
    distance = ndimage.distance_transform_edt(~mask, sampling=[float(s) for s in reversed(spacing_xyz)])
    return distance <= margin_mm


def generate_lesion(image: sitk.Image, lesion: np.ndarray, config: LesionConfig, model: LoadedModel,
                    pixel_id: int | None = None, progress: Progress = SILENT) -> tuple[sitk.Image, np.ndarray]:
    """The image with a lesion drawn in `lesion` (bool, input grid), and the voxels allowed to change;
    in pixel type `pixel_id` when it is an integer type (see inpaint.compose)."""
    if config.margin_mm < 0:
        raise InputError(f"--margin must be 0 or more mm, got {config.margin_mm}")
    require_controlnet(model, "lesion")
    changed = grow(lesion, image.GetSpacing(), config.margin_mm)
    generated = regenerate(
        image, changed, model, region=config.region, steps=config.steps, jump_length=config.jump_length,
        resamplings=config.resamplings, eta=config.eta, seed=config.seed, windows=config.windows,
        anatomy=config.anatomy, control_mask=lesion, progress=progress, stage="lesion",
    )
    return compose(image, generated, changed, pixel_id), changed


def run(config: LesionConfig, input: str | os.PathLike, mask: str | os.PathLike, output: str | os.PathLike,
        change_mask: str | os.PathLike | None = None, progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    outputs = {"output": output, "change mask": change_mask}
    check_outputs(input, outputs)
    check_outputs(mask, outputs)
    image = ctio.read_ct(input)
    lesion = read_mask(mask, image, config.label, what="lesion mask")
    model = load_model(config.model, config.device, config.controlnet, estimator=estimator)
    result, changed = generate_lesion(image, lesion, config, model, input_pixel_id(input), progress)
    report_change(progress, image, result)
    written = {"image": str(ctio.write_image(result, output))}
    if change_mask is not None:
        written["change_mask"] = str(ctio.write_image(ctio.from_array(changed.astype(np.uint8), image), change_mask))
    return written
