"""Zero-shot denoising with DiffPIR (the paper's method): the pretrained model is the prior, the noisy
scan y the measurement, H = I.

Noise level: sigma_n is the standard deviation of the input's noise, in HU (`noise_level`), or estimated
from the image (`algorithms.estimate_noise_hu`, flat soft-tissue tiles); `strength` multiplies it
(> 1 smooths more, < 1 less). In the network's units sigma_n = HU / hu_per_unit(region); sampling starts
at t* = the timestep whose sigma_bar_t matches sigma_n, from x_{t*} = sqrt(a_t*) y (the noisy image is
already a sample of x_{t*}), and runs `steps` DiffPIR steps down to 0 with lambda and zeta.

Grids: when the input's spacing is within 30% of the model's working spacing (grids.NATIVE_TOLERANCE)
the model runs on the input grid itself, and y is the input exactly. Otherwise y is the input resampled
(linearly) to the working spacing, sigma_n is re-estimated there (resampling averages noise away), and
the result is resampled back; the detail that the round trip through the working grid removes (input
minus its round trip) is added back where it exceeds 3 times that band's robust spread (1.4826 MAD),
so strong edges finer than the working grid survive whole and the noise in that band does not
(`keep_detail`).

Air (--skip-air, off by default): windows wholly outside the body (`common.body_mask` of the input on
the working grid) are not run through the network; their clean-image estimate is air (-1000 HU), which
DiffPIR's data step then blends with the input there. Faster on scans with much air around the body;
the result changes slightly in the air only.

HU window: the network sees the region's window only. Where the result sits at the window's edge (the
true value is beyond it, e.g. bone in the chest window), or the input lies beyond the window by more
than 3 noise standard deviations (air in the abdomen window), the output keeps the input's value.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import ctio
from ..algorithms import denoise_data_step, diffpir, diffpir_start, estimate_noise_hu
from ..errors import InputError
from ..metrics import denoise_residual_warning
from ..progress import SILENT, Progress
from ..settings.denoise import DenoiseConfig  # noqa: F401 (the task's config, declared with its settings)
from ..regions import HU_WINDOWS, check_region, hu_per_unit
from ..sampling import make_generator, spaced_timesteps
from ..schedules import timestep_for_noise_level
from ..units import clamp_physical
from .common import LoadedModel, check_outputs, check_positive, load_model, report_change
from .prepare import prepare_task


@dataclass
class DenoiseInfo:
    noise_level_hu: float  # sigma_n on the input grid (given or estimated), times strength
    working_noise_hu: float  # sigma_n on the working grid
    t_start: int
    timesteps: list[int]
    native_grid: bool
    windows: tuple[int, int] = (0, 0)  # windows the network evaluated per step, of all windows


def denoise_image(image: sitk.Image, config: DenoiseConfig, model: LoadedModel,
                  progress: Progress = SILENT) -> tuple[sitk.Image, DenoiseInfo]:
    """The denoised image on the input's exact grid, and what was done."""
    check_region(config.region, auto=True)
    check_positive(steps=config.steps)
    if not 0.0 <= config.zeta <= 1.0:
        raise InputError(f"--zeta must lie in [0, 1], got {config.zeta}")
    if not config.strength > 0:
        raise InputError(f"--strength must be positive, got {config.strength}")
    if config.noise_level is not None and not config.noise_level > 0:
        raise InputError(f"--noise-level must be a positive number of HU, got {config.noise_level}")
    prepared = prepare_task(model, config.region, config.windows, image=image, anatomy=config.anatomy,
                            skip_air=config.skip_air, progress=progress)
    work, native = prepared.work, prepared.native

    def noise_of(im: sitk.Image) -> float:
        return estimate_noise_hu(ctio.to_array(im), im.GetSpacing()[:2])

    # Estimated on axial slices (prepared.input: the input in the models' orientation), so that the same
    # scan stored with other axes gets the same estimate.
    input_noise = config.noise_level if config.noise_level is not None else noise_of(prepared.input)
    if native:
        work_noise = input_noise
    else:
        # The same estimator on both grids gives the factor by which resampling changed the noise;
        # where it finds no flat tissue, white noise averaged over larger voxels falls with the square
        # root of the voxel volume (and interpolation onto smaller voxels leaves it about as it was).
        before, after = noise_of(prepared.input), noise_of(work)
        if before > 0 and after > 0:
            work_noise = input_noise * (after / before)
        else:
            ratio = np.prod(image.GetSpacing()) / np.prod(work.GetSpacing())
            work_noise = input_noise * min(1.0, float(np.sqrt(ratio)))
    if not input_noise > 0 or not work_noise > 0:
        raise InputError(
            "could not estimate the noise level: the image has no flat soft-tissue area (-300..300 HU); "
            "pass --noise-level in HU"
        )
    work_noise *= config.strength
    sigma_n = work_noise / hu_per_unit(prepared.region)
    t_start = timestep_for_noise_level(sigma_n)
    timesteps = spaced_timesteps(min(config.steps, t_start + 1), t_start)
    info = DenoiseInfo(input_noise * config.strength, work_noise, t_start, timesteps, native)

    y, estimator = prepared.y, prepared.estimator
    info.windows = (estimator.active_windows, len(estimator))
    generator = make_generator(config.seed)
    x = diffpir_start(y, t_start, sigma_n, model.alphas_cumprod, generator)
    x = diffpir(
        estimator, model.alphas_cumprod, x, timesteps, denoise_data_step(y), sigma_n, config.lam, config.zeta,
        generator, progress=progress, stage="denoise",
    )
    out = ctio.to_array(prepared.result(x))
    original = ctio.to_array(image)
    if not native and config.keep_detail:
        # The network sees the input clipped to the region's window, so its output lies within the window
        # and the detail it lacks is measured against the clipped input's round trip: unclipped, the bone
        # blurred across the working grid put edges of hundreds of HU into the brain beside the skull
        # (a quarter-dose real head CT at 0.96 mm: 23.1 dB against the noisy input's 29.5; clipped, 33.2 dB).
        low, high = HU_WINDOWS[prepared.region]
        round_trip = ctio.to_array(ctio.resample_onto(clamp_physical(work, (low, high)), image, "linear"))
        detail = np.clip(original, low, high) - round_trip
        # The band is mostly noise: its own robust spread sets the bar, and detail above 3 times that
        # (edges finer than the working grid) is kept whole; soft thresholding would shift every such
        # edge by the threshold (measured: 42.2 dB against 47.1 dB on quarter-dose chest phantoms).
        spread = 1.4826 * float(np.median(np.abs(detail - np.median(detail))))
        out += np.where(np.abs(detail) > 3.0 * spread, detail, 0.0)
    out = np.where(beyond_window(original, out, prepared.region, input_noise), original, out).astype(np.float32)
    return ctio.from_array(out, image), info


# How far beyond the window, in noise standard deviations, an input value must lie to be certainly
# beyond it: noise alone crosses 3 sigma for about one voxel in 700 (one-sided).
BEYOND_SIGMAS = 3.0


def beyond_window(original: np.ndarray, result: np.ndarray, region: str, noise_hu: float) -> np.ndarray:
    """Where the output must keep the input: the network sees only the region's HU window, so it knows
    nothing of values beyond it. That is where the result sits at the window's edge (bone in the chest
    window), and where the input lies beyond the window by more than its noise explains (air around
    the body in the abdomen window [-120, 240] HU, which the model may render at -110 HU, not at the
    edge)."""
    low, high = HU_WINDOWS[region]
    margin = 0.01 * (high - low)
    saturated = (result <= low + margin) | (result >= high - margin)
    certain = BEYOND_SIGMAS * noise_hu
    return saturated | (original < low - certain) | (original > high + certain)


def run(config: DenoiseConfig, input: str | os.PathLike, output: str | os.PathLike,
        progress: Progress = SILENT, estimator=None) -> dict[str, str]:
    check_outputs(input, {"output": output})
    image = ctio.read_ct(input)
    model = load_model(config.model, config.device, estimator=estimator)
    result, info = denoise_image(image, config, model, progress)
    how = "given" if config.noise_level is not None else "estimated"
    progress.note("noise", f"noise level {info.noise_level_hu:.1f} HU ({how}, x{config.strength:g} strength); "
                           f"sampling starts at timestep {info.t_start} and runs {len(info.timesteps)} "
                           f"step{'s' if len(info.timesteps) != 1 else ''}")
    report_change(progress, image, result)
    if warning := denoise_residual_warning(ctio.to_array(image), ctio.to_array(result)):
        warnings.warn(warning)  # structure taken away, not only noise: a silent wrong answer otherwise
    progress.start("write", 1, f"noise {info.noise_level_hu:.1f} HU, t*={info.t_start}")
    path = ctio.write_image(result, output)
    progress.step(1)
    return {"image": str(path)}
