"""Through-plane super-resolution (the paper's ControlNet task): thin slices from thick ones.

Grids
- Input: n thick slices of spacing dz along the image's third axis; slice k is taken to be the average
  of the anatomy over its slab [z_k - dz/2, z_k + dz/2] (slab thickness = spacing, as in RPLHR-CT's
  5 mm scans).
- Output: the same slab stack cut into n_out = round(n dz / dz_out) thin slices (dz_out from --factor,
  dz / factor, or --spacing), spacing adjusted so that the thin slices tile the slabs exactly: same
  in-plane grid, direction and physical extent as the input, origin moved by (dz_out - dz) / 2 along the
  slice axis.
- Working grid: the model's working spacing over the same slab stack (its z spacing adjusted to tile the
  stack exactly); when the output spacing is within 30% of the working spacing (grids.NATIVE_TOLERANCE), the output grid itself.

Sampling: DiffPIR (Zhu et al. 2023) from pure noise at T - 1 with `steps` uniformly spaced steps (paper:
100 NFEs, sigma_n = 1.0, lambda = 1), with H = `algorithms.SliceAverage`: y = H x, y the input resampled
in plane onto the working grid (its slice positions are kept, so no interpolation along z), x the
working-grid volume, each row of H the overlap of one thick slab with the working slices. The
super-resolution ControlNet sees c_t = the input linearly interpolated onto the working grid
(`controls.superres_control`, the convention training uses).

Air (--skip-air, off by default): windows wholly outside the body (`common.body_mask` of the input
linearly resampled onto the working grid) are not run through the network; their clean-image estimate
is air (-1000 HU). Faster on scans with much air around the body; the result changes slightly in the
air only.

Consistency (default on): the result, resampled onto the output grid, is corrected by the minimum-norm
change that makes every thick slab's average equal the input exactly,
    x <- x + H_out^T (H_out H_out^T)^-1 (y_in - H_out x),
in HU, so what the scanner measured is kept (including values beyond the HU window and in-plane detail
finer than the working grid) and only the split of each slab into thin slices comes from the model.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..algorithms import SliceAverage, diffpir
from ..errors import InputError
from ..progress import SILENT, Progress
from ..settings.superres import SuperresConfig, PAPER_FACTOR  # noqa: F401 (the task's config, declared with its settings)
from ..controls import superres_control
from ..grids import Orientation, close_spacing, slab_grid, thick_slices_grid
from ..regions import check_region
from ..sampling import make_generator, spaced_timesteps
from .common import LoadedModel, check_outputs, check_positive, load_model, require_controlnet
from .prepare import prepare_task

def output_grid(image: sitk.Image, factor: float | None = PAPER_FACTOR, spacing: float | None = None) -> sitk.Image:
    """The super-resolved grid of `image` (see the module's docstring)."""
    nz, dz = image.GetSize()[2], image.GetSpacing()[2]
    if spacing is not None:
        if not spacing > 0:
            raise InputError(f"--spacing must be a positive number of mm, got {spacing}")
        target = float(spacing)
    else:
        if factor is None or not factor > 1:
            raise InputError(f"--factor must be above 1, got {factor}")
        target = dz / float(factor)
    n_thin = int(round(nz * dz / target))
    if n_thin <= nz:
        raise InputError(
            f"the slices are {dz:g} mm apart already; a target of {target:g} mm adds none. "
            "Give a --spacing below the input's slice spacing or a --factor above 1"
        )
    return slab_grid(image, image.GetSpacing()[:2], n_thin)


def _slab_operator(image: sitk.Image, grid: sitk.Image) -> SliceAverage:
    """H from the input's thick slabs to the thin slices of `grid` (positions along the slice axis)."""
    nz, dz = image.GetSize()[2], image.GetSpacing()[2]
    n, d = grid.GetSize()[2], grid.GetSpacing()[2]
    return SliceAverage.from_grids(np.arange(nz) * dz, dz, -dz / 2.0 + (np.arange(n) + 0.5) * d, d)


def super_resolve(image: sitk.Image, config: SuperresConfig, model: LoadedModel,
                  progress: Progress = SILENT) -> sitk.Image:
    """The super-resolved image on `output_grid(image, ...)`, in the input's axis order. The slices are
    the axial ones: a stack stored with permuted or reversed axes is brought to the models'
    orientation first (grids.Orientation) and the result back to the input's axis order."""
    orientation = Orientation(image)
    if not orientation.identity:
        return orientation.from_axial(super_resolve(orientation.to_axial(image), config, model, progress))
    check_region(config.region, auto=True)
    check_positive(steps=config.steps)
    require_controlnet(model, "superres")
    if not config.sigma_n > 0 or not config.lam > 0:
        raise InputError("DiffPIR's sigma_n and lambda must be positive")
    if not 0.0 <= config.zeta <= 1.0:
        raise InputError(f"zeta must lie in [0, 1], got {config.zeta}")
    target = output_grid(image, config.factor, config.spacing)
    ws = model.card.working_spacing
    nz, dz = image.GetSize()[2], image.GetSpacing()[2]
    if close_spacing(target.GetSpacing(), ws):
        work = target
    else:
        in_plane = tuple(image.GetSpacing()[:2]) if close_spacing(image.GetSpacing()[:2], ws[:2]) else tuple(ws[:2])
        work = slab_grid(image, in_plane, max(nz, int(round(nz * dz / ws[2]))))
    # y: the thick slices on the working grid's in-plane lattice, at their own positions along z.
    low = ctio.resample_onto(image, thick_slices_grid(image, work), "linear")
    prepared = prepare_task(
        model, config.region, config.windows, image=image, target=target, work=work, measurement=low,
        anatomy=config.anatomy, skip_air=config.skip_air,
        control=lambda grid, region: superres_control(image, grid, region),  # the region as resolved there
        progress=progress,
    )
    H = _slab_operator(image, work)
    generator = make_generator(config.seed)
    x = torch.randn((1, 1, *prepared.shape), generator=generator).to(model.device)
    x = diffpir(
        prepared.estimator, model.alphas_cumprod, x, spaced_timesteps(config.steps), H.data_step(prepared.y),
        config.sigma_n, config.lam, config.zeta, generator, progress=progress, stage="superres",
    )
    result = prepared.result(x)
    if not config.consistency:
        return result
    return slab_consistent(result, image)


def slab_consistent(thin: sitk.Image, thick: sitk.Image) -> sitk.Image:
    """thin + H^T (H H^T)^-1 (y - H thin): the smallest change after which every thick slice is the
    average of the thin slices its slab covers. Both on the same in-plane grid."""
    H = _slab_operator(thick, thin)
    A = H.A.numpy()
    x = ctio.to_array(thin).astype(np.float64)
    residual = ctio.to_array(thick).astype(np.float64) - np.einsum("lz,zhw->lhw", A, x)
    solved = np.einsum("kl,lhw->khw", np.linalg.inv(A @ A.T), residual)
    x += np.einsum("lz,lhw->zhw", A, solved)
    return ctio.from_array(x.astype(np.float32), thin)


def run(config: SuperresConfig, input: str | os.PathLike, output: str | os.PathLike,
        progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_outputs(input, {"output": output})
    image = ctio.read_ct(input)
    model = load_model(config.model, config.device, config.controlnet, estimator=estimator)
    result = super_resolve(image, config, model, progress)
    return {"image": str(ctio.write_image(result, output))}
