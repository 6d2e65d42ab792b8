"""Sampling algorithms for the tasks, built on `sampling.sample` (its x0_hook, on_step and timestep lists).

Notation: a_t = alpha_bar_t (cumulative product of the schedule), sigma_bar_t = sqrt((1 - a_t) / a_t)
(the noise-to-signal ratio of x_t / sqrt(a_t)), x0_hat the network's estimate of the clean image.
Everything works in the network's [-1, 1] units on the working grid; the tasks handle HU and grids.

- DiffPIR (Zhu et al., "Denoising Diffusion Models for Plug-and-Play Image Restoration", CVPR 2023):
  `diffpir`, with the closed-form data steps `denoise_data_step` (H = I) and `SliceAverage` (H = slab
  average along z, for through-plane super-resolution).
- RePaint (Lugmayr et al., "RePaint: Inpainting using Denoising Diffusion Probabilistic Models",
  CVPR 2022): `repaint_timesteps` (the jump schedule) and `repaint`.
- Partial diffusion and reconstruction for anomaly maps (diffuse to t, denoise back; the paper uses
  t = 950): `reconstruct`.
- `estimate_noise_hu`: the measurement noise level of a CT, for DiffPIR's sigma_n.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .progress import SILENT, Progress
from .sampling import StepContext, add_noise, make_generator, sample, spaced_timesteps

Estimator = Callable[[torch.Tensor, int], torch.Tensor]


def sigma_bar(alphas_cumprod: torch.Tensor, t: int) -> float:
    """sqrt((1 - a_t) / a_t); 0 for t = -1 (the end of a trajectory)."""
    if t < 0:
        return 0.0
    a = float(alphas_cumprod[t])
    return math.sqrt((1.0 - a) / a)


# ------------------------------------------------------------------------------------------- DiffPIR


def denoise_data_step(y: torch.Tensor) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """DiffPIR's data-proximal step for denoising (H = I), in closed form:

        x0 = argmin_x ||y - x||^2 + rho_t ||x - x0_hat||^2 = (y + rho_t x0_hat) / (1 + rho_t)
    """

    def step(x0_hat: torch.Tensor, rho: float) -> torch.Tensor:
        return x0_hat.mul_(rho).add_(y).div_(1.0 + rho)

    return step


class SliceAverage:
    """H for through-plane super-resolution: each low-resolution slice is the average of the working-grid
    slices its slab covers (weights = overlap of the two voxel extents along z, rows summing to 1).

    The data step has the closed form x0 = x0_hat + H^T (H H^T + rho I)^-1 (y - H x0_hat); H H^T is a
    small (n_low x n_low) matrix, so the solve costs nothing next to a network evaluation.
    """

    def __init__(self, weights: torch.Tensor):
        self.A = weights.to(torch.float64)  # (n_low, n_high)
        self.AAt = self.A @ self.A.T

    @classmethod
    def from_grids(cls, low_z: Sequence[float], low_thickness: float, high_z: Sequence[float], high_thickness: float):
        """Overlap weights between slabs centred at low_z (thickness low_thickness) and at high_z."""
        low = np.asarray(low_z, np.float64)[:, None]
        high = np.asarray(high_z, np.float64)[None, :]
        lo = np.maximum(low - low_thickness / 2, high - high_thickness / 2)
        hi = np.minimum(low + low_thickness / 2, high + high_thickness / 2)
        w = np.clip(hi - lo, 0.0, None)
        sums = w.sum(axis=1, keepdims=True)
        if (sums <= 0).any():
            raise ValueError("a low-resolution slice covers no working-grid slice")
        return cls(torch.from_numpy(w / sums))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """H x for x of shape (..., n_high, H, W) -> (..., n_low, H, W)."""
        return torch.einsum("lz,...zhw->...lhw", self.A.to(x), x)

    def adjoint(self, r: torch.Tensor) -> torch.Tensor:
        return torch.einsum("lz,...lhw->...zhw", self.A.to(r), r)

    def data_step(self, y: torch.Tensor) -> Callable[[torch.Tensor, float], torch.Tensor]:
        def step(x0_hat: torch.Tensor, rho: float) -> torch.Tensor:
            eye = torch.eye(self.AAt.shape[0], dtype=torch.float64)
            inverse = torch.linalg.inv(self.AAt + rho * eye).to(x0_hat)
            residual = y - self.apply(x0_hat)
            return x0_hat.add_(self.adjoint(torch.einsum("kl,...lhw->...khw", inverse, residual)))

        return step


def diffpir_start(y: torch.Tensor, t_start: int, sigma_n: float, alphas_cumprod: torch.Tensor,
                  generator: torch.Generator | None) -> torch.Tensor:
    """x_{t*} from a measurement y = x0 + n, n ~ N(0, sigma_n^2) (DiffPIR's start for denoising).

    sqrt(a_t) y = sqrt(a_t) x0 + sqrt(a_t) sigma_n n already carries noise of variance a_t sigma_n^2; x_t
    needs 1 - a_t, so only the shortfall (1 - a_t) - a_t sigma_n^2 is added as fresh noise. At the t*
    whose sigma_bar matches sigma_n it is (nearly) zero: the noisy image *is* x_{t*}, scaled.
    """
    a = float(alphas_cumprod[t_start])
    top_up = max(1.0 - a - a * sigma_n**2, 0.0)
    x = y * math.sqrt(a)
    if top_up > 0:
        noise = torch.randn(y.shape, generator=generator, device=generator.device if generator else "cpu")
        x = x + math.sqrt(top_up) * noise.to(y)
    return x


def diffpir(
    estimator: Estimator,
    alphas_cumprod: torch.Tensor,
    x: torch.Tensor,
    timesteps: Sequence[int],
    data_step: Callable[[torch.Tensor, float], torch.Tensor],
    sigma_n: float,
    lam: float,
    zeta: float,
    generator: torch.Generator | None,
    progress: Progress = SILENT,
    stage: str = "diffpir",
) -> torch.Tensor:
    """DiffPIR, Algorithm 1 of Zhu et al. (2023), from x = x_{timesteps[0]}:

        for t in timesteps (descending, s the next one; s = -1 after the last, a_{-1} = 1):
            x0_hat  = (x_t - sqrt(1 - a_t) eps_theta(x_t, t)) / sqrt(a_t)          (clipped to [-1, 1])
            rho_t   = lam sigma_n^2 / sigma_bar_t^2
            x0_hat  = argmin_x ||y - H x||^2 + rho_t ||x - x0_hat||^2               (data_step)
            eps_hat = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)
            x_s     = sqrt(a_s) x0_hat + sqrt(1 - a_s) (sqrt(1 - zeta) eps_hat + sqrt(zeta) z)

    The last line is sampling.sample's eta = 0 update followed by an exact zeta mix (on_step): with
    x_s^ddim = sqrt(a_s) x0_hat + sqrt(1 - a_s) eps_hat,
        x_s = sqrt(1 - zeta) x_s^ddim + (1 - sqrt(1 - zeta)) sqrt(a_s) x0_hat + sqrt(zeta (1 - a_s)) z,
    which sample's single eta cannot express (its variance depends on a_t and a_s, DiffPIR's only on a_s).
    """
    if not 0.0 <= zeta <= 1.0:
        raise ValueError("zeta must lie in [0, 1]")

    def x0_hook(x0: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        rho = lam * sigma_n**2 / max(sigma_bar(alphas_cumprod, ctx.t) ** 2, 1e-12)
        return data_step(x0, rho)

    def on_step(x_s: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
        if zeta == 0.0 or ctx.t_next < 0 or ctx.x0 is None:
            return None
        a_s = float(alphas_cumprod[ctx.t_next])
        keep = math.sqrt(1.0 - zeta)
        noise = torch.randn(x_s.shape, generator=generator, device=generator.device if generator else "cpu")
        x_s.mul_(keep).add_(ctx.x0, alpha=(1.0 - keep) * math.sqrt(a_s))
        return x_s.add_(noise.to(x_s), alpha=math.sqrt(zeta * (1.0 - a_s)))

    return sample(
        estimator, alphas_cumprod, x, timesteps, eta=0.0, generator=generator,
        x0_hook=x0_hook, on_step=on_step, progress=progress, stage=stage,
    )


# ------------------------------------------------------------------------------------------- RePaint


def repaint_timesteps(steps: int, jump_length: int, resamplings: int, start: int = 999) -> list[int]:
    """RePaint's schedule over `steps` uniformly spaced timesteps from `start` down to 0.

    Going down, every `jump_length` steps the trajectory jumps back up by `jump_length` steps (one
    re-noising x_{t+j} ~ q(x_{t+j} | x_t), which sample() does when the next timestep is later) and
    descends again; each such point is revisited until it has been passed `resamplings` times
    (resamplings = 1: no jumps, plain conditioned sampling). The network runs once per descending step:
    about steps * resamplings times in all.
    """
    if jump_length < 1 or resamplings < 1:
        raise ValueError("jump length and resamplings must be at least 1")
    base = spaced_timesteps(steps, start)
    last = len(base) - 1
    remaining = {i: resamplings - 1 for i in range(jump_length, last, jump_length)}
    order, i = [0], 0
    while i < last:
        i += 1
        order.append(i)
        if remaining.get(i, 0) > 0:
            remaining[i] -= 1
            i -= jump_length
            order.append(i)
    return [base[k] for k in order]


def repaint(
    estimator: Estimator,
    alphas_cumprod: torch.Tensor,
    known: torch.Tensor,
    unknown: torch.Tensor,
    timesteps: Sequence[int],
    generator: torch.Generator | None,
    eta: float = 1.0,
    progress: Progress = SILENT,
    stage: str = "repaint",
) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) with the jump schedule `timesteps`.

    known: x0 of the image (its values inside `unknown` are ignored); unknown: boolean mask m of the
    region to generate (broadcastable to known). After every descending step t -> s:
        x_s^known   ~ q(x_s | x0) = sqrt(a_s) x0 + sqrt(1 - a_s) z      (x0 itself at the end, s = -1)
        x_s         = m * x_s^unknown + (1 - m) * x_s^known
    where x_s^unknown is the sampler's step (eta = 1: DDPM-like ancestral, as RePaint uses). Jumps back
    re-noise the whole volume. Sampling starts from pure noise at timesteps[0].
    """
    # At t = 999 (a_t ~ 2e-9) this is pure noise; a later start keeps the coarse layout.
    x = add_noise(known, timesteps[0], alphas_cumprod, generator)

    def on_step(x_s: torch.Tensor, ctx: StepContext) -> torch.Tensor | None:
        if ctx.eps is None:  # a jump back: x_s ~ q(x_s | x_t) is consistent already
            return None
        if ctx.t_next < 0:
            return torch.where(unknown, x_s, known)
        return torch.where(unknown, x_s, add_noise(known, ctx.t_next, alphas_cumprod, generator))

    return sample(
        estimator, alphas_cumprod, x, timesteps, eta=eta, generator=generator, on_step=on_step,
        progress=progress, stage=stage,
    )


# ------------------------------------------------------------------------------------------- anomaly


def reconstruct(
    estimator: Estimator,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    t_start: int,
    steps: int,
    seeds: Sequence[int],
    eta: float = 0.0,
    progress: Progress = SILENT,
    stage: str = "reconstruct",
) -> torch.Tensor:
    """Pseudo-healthy reconstruction for anomaly maps: diffuse x0 to t_start,
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) z, and denoise back with `steps` DDIM steps; averaged over one
    trajectory per seed. At t = 950 little of the input survives but its coarse layout, so the model
    redraws what it considers normal there, and what it cannot reproduce shows in the residual."""
    if not seeds:
        raise ValueError("at least one seed is needed")
    total = None
    for k, seed in enumerate(seeds):
        generator = make_generator(seed)
        x_t = add_noise(x0, t_start, alphas_cumprod, generator)
        x = sample(
            estimator, alphas_cumprod, x_t, spaced_timesteps(steps, t_start), eta=eta, generator=generator,
            progress=progress, stage=f"{stage} {k + 1}/{len(seeds)}" if len(seeds) > 1 else stage,
        )
        total = x.clone() if total is None else total.add_(x)
    return total.div_(len(seeds))


# ------------------------------------------------------------------------------------------- noise level


NOISE_TILE_MM = 16.0  # edge of the tiles the noise estimate works on, in mm (when the spacing is known)


def estimate_noise_hu(hu: np.ndarray, spacing_xy: tuple[float, float] | None = None,
                      tissue: tuple[float, float] = (-300.0, 300.0), block: int | None = None) -> float:
    """The standard deviation of a CT's noise in HU, estimated from the image alone.

    CT noise is made per slice (filtered back-projection), so the estimate works in-plane: the image is
    cut into block x block tiles of each slice; tiles lying wholly in soft tissue (`tissue` HU, away
    from air and bone edges) have their mean plane (a, b, c in a + b x + c y) removed, and the residual
    standard deviation of the flattest tenth of them (at least three) is the noise. Flat tiles measure
    noise plus a little texture, and the flattest of them read pure noise low (order statistics): the
    two roughly cancel. Tiles across an edge are excluded by the range test or land in the upper tenths.
    Returns 0.0 when no tile qualifies (e.g. an air-only volume).

    Tile size: `block` pixels when given, else about NOISE_TILE_MM (16 mm, 4 to 16 pixels) when the
    in-plane spacing is known, else 8 pixels. A fixed physical size keeps the amount of anatomy inside a
    tile alike across resolutions. The tenth (not a fifth) because realistic anatomy leaves few flat
    tiles: on held-out abdomen phantoms at 10% and 25% dose the flattest fifth read +26% to +53% over
    the true noise at 1-4 mm pixels, the flattest tenth +11% to +28%; on pure white noise it reads
    about 15% low.
    """
    if block is None:
        block = 8 if spacing_xy is None else int(np.clip(round(NOISE_TILE_MM / min(spacing_xy)), 4, 16))
    hu = np.asarray(hu, dtype=np.float32)
    z, h, w = hu.shape
    nb_y, nb_x = h // block, w // block
    if nb_y == 0 or nb_x == 0:
        return 0.0
    tiles = hu[:, : nb_y * block, : nb_x * block].reshape(z, nb_y, block, nb_x, block).transpose(0, 1, 3, 2, 4)
    tiles = tiles.reshape(-1, block * block).astype(np.float64)
    inside = (tiles.min(axis=1) >= tissue[0]) & (tiles.max(axis=1) <= tissue[1])
    tiles = tiles[inside]
    if len(tiles) == 0:
        return 0.0
    yy, xx = np.mgrid[0:block, 0:block]
    design = np.stack([np.ones(block * block), xx.ravel() - (block - 1) / 2, yy.ravel() - (block - 1) / 2], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, tiles.T, rcond=None)
    residual = tiles - (design @ coefficients).T
    std = residual.std(axis=1, ddof=3)
    flattest = np.sort(std)[: max(3, len(std) // 10)]
    return float(np.median(flattest))
