"""The sampling algorithms with oracle noise estimators (eps consistent with a known clean image), so
each one's fixed point and invariants can be checked exactly, plus the noise-level estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from MedDiffFMLogic.algorithms import (
    SliceAverage, denoise_data_step, diffpir, diffpir_start, estimate_noise_hu, reconstruct, repaint,
    repaint_timesteps,
)
from MedDiffFMLogic.sampling import make_generator, spaced_timesteps
from MedDiffFMLogic.schedules import alphas_cumprod

A = alphas_cumprod()


def oracle(x0: torch.Tensor):
    """eps_theta that knows the clean image: eps = (x_t - sqrt(a_t) x0) / sqrt(1 - a_t)."""

    def estimate(x: torch.Tensor, t: int) -> torch.Tensor:
        a = float(A[t])
        return (x - math.sqrt(a) * x0) / math.sqrt(1.0 - a)

    return estimate


def _volume(seed: int = 0, shape=(1, 1, 6, 8, 8)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float() * 1.6 - 0.8


def test_slice_average_weights_adjoint_and_exact_data_step():
    # Thick slabs of 5 mm over thin slices of 1 mm, and a fractional case (2.5 mm over 1 mm).
    for thick, thin, n in ((5.0, 1.0, 3), (2.5, 1.0, 4)):
        m = int(round(n * thick / thin))
        H = SliceAverage.from_grids(np.arange(n) * thick, thick, -thick / 2 + (np.arange(m) + 0.5) * thin, thin)
        np.testing.assert_allclose(H.A.sum(dim=1).numpy(), 1.0)
        x, r = torch.randn(1, 1, m, 3, 4, dtype=torch.float64), torch.randn(1, 1, n, 3, 4, dtype=torch.float64)
        assert torch.allclose((H.apply(x) * r).sum(), (x * H.adjoint(r)).sum())  # <Hx, r> = <x, H^T r>
        y = torch.randn(1, 1, n, 3, 4, dtype=torch.float64)
        # rho -> 0: the data step is the projection onto {x : H x = y}.
        projected = H.data_step(y)(x.clone(), 1e-9)
        assert torch.allclose(H.apply(projected), y, atol=1e-6)
        # It changes x only by a vector in the range of H^T (the minimum-norm correction).
        change = projected - x
        w = torch.einsum("kl,...lhw->...khw", torch.linalg.inv(H.AAt), H.apply(change))
        assert torch.allclose(H.adjoint(w), change, atol=1e-9)
    with pytest.raises(ValueError, match="covers no"):
        SliceAverage.from_grids([0.0, 100.0], 5.0, [0.0, 1.0], 1.0)


def test_denoise_data_step_is_the_closed_form():
    y, x0 = torch.randn(2, 3), torch.randn(2, 3)
    for rho in (0.1, 1.0, 10.0):
        # argmin ||y - x||^2 + rho ||x - x0||^2 sets 2 (x - y) + 2 rho (x - x0) = 0.
        assert torch.allclose(denoise_data_step(y)(x0.clone(), rho), (y + rho * x0) / (1 + rho))


def test_diffpir_with_an_oracle_returns_the_clean_image():
    x0 = _volume()
    generator = make_generator(0)
    sigma_n = 0.15
    y = x0 + sigma_n * torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    t_start = 87  # sigma_bar_87 ~ 0.15 under the cosine schedule
    x = diffpir_start(y, t_start, sigma_n, A, generator)
    assert torch.allclose(x, math.sqrt(float(A[t_start])) * y, atol=0.05)  # the noisy image is x_{t*}, scaled
    # A strong prior (lambda large) with a perfect denoiser lands on x0, whatever y says.
    out = diffpir(oracle(x0), A, x, spaced_timesteps(8, t_start), denoise_data_step(y), sigma_n, 1e6, 0.0, generator)
    assert torch.allclose(out, x0, atol=1e-4)
    with pytest.raises(ValueError, match="zeta"):
        diffpir(oracle(x0), A, x, [10, 0], denoise_data_step(y), sigma_n, 1.0, 1.5, generator)


def test_repaint_schedule_jumps_and_known_region():
    assert repaint_timesteps(10, 3, 1) == spaced_timesteps(10)
    steps = repaint_timesteps(10, 3, 3)
    up = [(a, b) for a, b in zip(steps, steps[1:]) if b > a]
    down = [(a, b) for a, b in zip(steps, steps[1:]) if b < a]
    assert steps[0] == 999 and steps[-1] == 0 and len(up) == 2 * 2  # two jump points, r - 1 = 2 jumps each
    assert len(down) == len(steps) - 1 - len(up)
    base = spaced_timesteps(10)
    for a, b in up:
        assert base.index(b) - base.index(a) == -3  # back up by j = 3 steps
    known = _volume(2)
    unknown = torch.zeros(known.shape, dtype=torch.bool)
    unknown[..., 2:4, 3:6, 3:6] = True
    truth = _volume(3)  # the oracle draws another image inside the hole
    out = repaint(oracle(truth), A, known, unknown, repaint_timesteps(6, 2, 2), make_generator(0))
    assert torch.equal(out[~unknown], known[~unknown])
    assert torch.allclose(out[unknown], truth[unknown], atol=1e-3)


def test_reconstruct_averages_seeds_and_is_reproducible():
    x0 = _volume(4)
    # An oracle that knows x0 rebuilds it from t = 950 whatever the noise.
    out = reconstruct(oracle(x0), A, x0, 950, 5, seeds=[0, 1, 2])
    assert torch.allclose(out, x0, atol=1e-4)
    # A "healthy" model that knows another image rebuilds that one, and the same seeds repeat.
    healthy = _volume(5)
    a = reconstruct(oracle(healthy), A, x0, 950, 5, seeds=[7])
    b = reconstruct(oracle(healthy), A, x0, 950, 5, seeds=[7])
    assert torch.equal(a, b) and torch.allclose(a, healthy, atol=1e-4)
    with pytest.raises(ValueError, match="seed"):
        reconstruct(oracle(x0), A, x0, 950, 5, seeds=[])


def test_noise_estimate_measures_white_noise_on_flat_tissue():
    rng = np.random.default_rng(0)
    flat = np.full((12, 64, 64), 40.0, np.float32)
    for sigma in (10.0, 30.0):
        estimate = estimate_noise_hu(flat + rng.normal(0.0, sigma, flat.shape))
        # The flattest tenth of 8x8 tiles reads about 15% low on pure white noise (order statistics).
        assert 0.8 * sigma < estimate < 1.0 * sigma
    assert estimate_noise_hu(np.full((4, 32, 32), -1000.0)) == 0.0  # air only: nothing to measure


def test_noise_estimate_on_a_low_dose_phantom_at_coarse_pixels():
    from MedDiffFMLogic import ctio
    from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom, simulate_low_dose

    p = make_phantom(PhantomConfig(region="abdomen", size=(72, 72, 8), spacing=(4.0, 4.0, 5.0), seed=10001))
    clean = ctio.to_array(p.image)
    # a twentieth of the (exposure-controlled) full dose: about 13 HU at 4 x 4 x 5 mm, noise well above the
    # anatomy's fine texture, which the estimator cannot tell from noise at 4 mm pixels
    noisy = ctio.to_array(simulate_low_dose(p.image, 0.05, seed=1))
    body = ctio.to_array(p.labels) > 0
    true = float(np.std((noisy - clean)[body]))
    # 16 mm tiles (4 pixels): within 25% of the true noise; fixed 8-pixel tiles take in anatomy at 4 mm.
    assert abs(estimate_noise_hu(noisy, (4.0, 4.0)) / true - 1.0) < 0.25
