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
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from .. import ctio
from ..algorithms import SliceAverage, diffpir
from ..errors import InputError
from ..progress import SILENT, Progress
from ..controls import superres_control
from ..grids import close_spacing, slab_grid, thick_slices_grid
from ..regions import check_region
from ..sampling import WindowConfig, make_generator, spaced_timesteps
from .common import (
    DEFAULT_MODEL, DEFAULT_SUPERRES, LoadedModel, add_model_options, check_outputs, check_positive, load_model,
    require_controlnet,
)
from .prepare import prepare_task

PAPER_FACTOR = 5.0


@dataclass(frozen=True)
class SuperresConfig:
    region: str = "chest"
    factor: float | None = PAPER_FACTOR  # thin slices per thick slice (paper: 5)
    spacing: float | None = None  # target slice spacing in mm; overrides factor
    steps: int = 50  # DiffPIR steps from T - 1 (paper: 100)
    sigma_n: float = 1.0  # DiffPIR's sigma_n in [-1, 1] units (paper: 1.0)
    lam: float = 1.0  # DiffPIR's lambda (paper: 1)
    zeta: float = 0.0
    consistency: bool = True  # make every thick slab's average equal the input exactly
    skip_air: bool = False  # do not run the network on windows wholly outside the body (air estimated as air)
    controlnet: str = DEFAULT_SUPERRES
    anatomy: str | None = None  # organ label map on the output's (or any overlapping) grid
    model: str = DEFAULT_MODEL
    windows: WindowConfig = field(default_factory=WindowConfig)
    seed: int = 0
    device: str = "auto"


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
    """The super-resolved image on `output_grid(image, ...)`."""
    check_region(config.region)
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
        anatomy=config.anatomy, skip_air=config.skip_air, control=superres_control(image, work, config.region),
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


def add_command(subparsers) -> None:
    from ..cli_args import add_common, add_windows

    p = subparsers.add_parser("superres", help="through-plane super-resolution: thin slices from thick ones (ControlNet)")
    p.add_argument("input", help="the thick-slice CT (file or DICOM folder); never modified")
    p.add_argument("-o", "--output", required=True, help="the thin-slice CT (same in-plane grid and extent)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--factor", type=float, default=None, help="thin slices per thick slice (default 5, the paper's)")
    target.add_argument("--spacing", type=float, default=None, help="target slice spacing in mm (instead of --factor)")
    add_model_options(p, anatomy_help="organ label map (optional condition; any grid overlapping the CT)")
    p.add_argument("--steps", type=int, default=SuperresConfig.steps, help=f"DiffPIR steps (default {SuperresConfig.steps}; paper 100)")
    p.add_argument("--lam", type=float, default=SuperresConfig.lam, help="DiffPIR lambda (default 1, the paper's)")
    p.add_argument("--sigma-n", type=float, default=SuperresConfig.sigma_n, help="DiffPIR sigma_n in [-1, 1] units (default 1, the paper's)")
    p.add_argument("--zeta", type=float, default=SuperresConfig.zeta, help="DiffPIR zeta in [0, 1] (default 0)")
    p.add_argument("--no-consistency", action="store_true", help="do not force each thick slab's average to the input")
    p.add_argument("--controlnet", default=DEFAULT_SUPERRES, help=f"super-resolution ControlNet (default {DEFAULT_SUPERRES})")
    add_windows(p, skip_air=True)
    add_common(p)
    p.set_defaults(run=_run_from_args)


def _run_from_args(args, progress: Progress) -> dict[str, str]:
    from ..cli_args import window_config

    config = SuperresConfig(
        region=args.region, factor=PAPER_FACTOR if args.factor is None else args.factor, spacing=args.spacing,
        steps=args.steps, sigma_n=args.sigma_n, lam=args.lam, zeta=args.zeta, consistency=not args.no_consistency,
        skip_air=args.skip_air,
        controlnet=args.controlnet, anatomy=args.anatomy, model=args.model, windows=window_config(args),
        seed=args.seed, device=args.device,
    )
    return run(config, args.input, args.output, progress)
