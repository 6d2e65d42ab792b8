import math
import subprocess
import sys
import textwrap

import pytest
import torch

from MedDiffFMLogic.network import coordinate_grid, whole_volume_axes
from MedDiffFMLogic.sampling import (
    Conditions, SlidingWindowEstimator, WindowConfig, add_noise, make_generator, sample, spaced_timesteps,
    window_starts,
)
from MedDiffFMLogic.schedules import alphas_cumprod, timestep_for_noise_level


@pytest.mark.parametrize("length,window,overlap", [(32, 32, 0.25), (100, 32, 0.25), (77, 32, 0.5), (20, 32, 0.25)])
def test_windows_cover_the_axis(length, window, overlap):
    starts = window_starts(length, window, overlap)
    covered = set()
    for s in starts:
        covered |= set(range(s, min(s + window, length)))
    assert covered == set(range(length))
    assert starts[0] == 0 and (length <= window or starts[-1] + window == length)


def test_one_window_equals_the_direct_estimate(tiny_net):
    x = torch.randn(1, 1, 32, 32, 32, generator=make_generator(1))
    anatomy = torch.randint(0, 119, (32, 32, 32), generator=make_generator(2))
    estimator = SlidingWindowEstimator(tiny_net, (32, 32, 32), Conditions(region=1, anatomy=anatomy))
    assert len(estimator) == 1
    blended = estimator(x, 400).clone()
    with torch.no_grad():
        direct = tiny_net(x, torch.tensor([400]), region=1, anatomy=anatomy[None],
                          coords=coordinate_grid(whole_volume_axes((32, 32, 32))))
    torch.testing.assert_close(blended, direct, rtol=1e-5, atol=1e-6)


def _border_jumps(estimator, eps):
    """Mean |eps[z+1] - eps[z]| across window borders along z, and elsewhere."""
    length = eps.shape[2]
    borders = {b[0].start - 1 for b in estimator.boxes if b[0].start > 0}
    borders |= {b[0].stop - 1 for b in estimator.boxes if b[0].stop < length}
    jumps = (eps[0, 0, 1:] - eps[0, 0, :-1]).abs().mean(dim=(1, 2))
    at = jumps[sorted(borders)].mean()
    away = jumps[[i for i in range(length - 1) if i not in borders]].mean()
    return at.item(), away.item()


def test_gaussian_blending_leaves_no_seam_at_window_borders(tiny_net):
    depth = 80
    z = torch.linspace(0, 1, depth)
    x = (torch.sin(6 * z)[:, None, None] * torch.ones(depth, 32, 32))[None, None]
    gaussian = SlidingWindowEstimator(tiny_net, (depth, 32, 32), Conditions(region=1))
    uniform = SlidingWindowEstimator(tiny_net, (depth, 32, 32), Conditions(region=1), WindowConfig(sigma_scale=1e3))
    assert len(gaussian) == 3
    at, away = _border_jumps(gaussian, gaussian(x, 300))
    assert at < 1.1 * away, (at, away)
    # the same check is sensitive: plain averaging of the windows shows the seams
    at_uniform, away_uniform = _border_jumps(uniform, uniform(x, 300))
    assert at_uniform > 1.15 * away_uniform and at_uniform > at


def test_windows_per_batch_do_not_change_the_estimate(tiny_net):
    x = torch.randn(1, 1, 40, 36, 20, generator=make_generator(3))
    one = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=0))(x, 200).clone()
    four = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=0), WindowConfig(batch=4))(x, 200)
    torch.testing.assert_close(one, four, rtol=1e-4, atol=1e-5)


def _oracle(x0, a):
    """The perfect noise estimate for a known clean image x0."""
    def estimate(x, t):
        return (x - math.sqrt(a[t]) * x0) / math.sqrt(1 - a[t])
    return estimate


def test_ddim_with_a_perfect_estimator_recovers_the_image():
    a = alphas_cumprod()
    x0 = torch.rand(1, 1, 8, 8, 8, generator=make_generator(0)) * 1.6 - 0.8
    x_T = torch.randn(x0.shape, generator=make_generator(1))
    out = sample(_oracle(x0, a), a, x_T, spaced_timesteps(10))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


def test_partial_trajectory_hooks_and_jumps():
    a = alphas_cumprod()
    x0 = torch.zeros(1, 1, 4, 4, 4)
    calls, seen = [], []
    oracle = _oracle(x0, a)

    def counted(x, t):
        calls.append(t)
        return oracle(x, t)

    start = timestep_for_noise_level(0.15)
    steps = spaced_timesteps(5, start=start)
    assert steps[0] == start and steps[-1] == 0 and len(steps) == 5
    # a RePaint-style jump back to a later timestep in the middle of the list
    sequence = steps[:3] + [steps[1]] + steps[2:]
    x = add_noise(x0, start, a, make_generator(0))
    sample(counted, a, x, sequence, generator=make_generator(1),
           x0_hook=lambda x0_hat, ctx: seen.append(("x0", ctx.t)) or x0_hat,
           on_step=lambda x, ctx: seen.append(("step", ctx.t, ctx.t_next)))
    assert len(calls) == len(sequence) - 1  # the jump needs no network call
    assert [s for s in seen if s[0] == "step"][2] == ("step", steps[2], steps[1])


def test_same_seed_same_sample_other_seed_differs(tiny_net):
    a = alphas_cumprod()

    def run(seed):
        estimator = SlidingWindowEstimator(tiny_net, (32, 32, 48), Conditions(region=2))
        g = make_generator(seed)
        x = torch.randn((1, 1, 32, 32, 48), generator=g)
        return sample(estimator, a, x, spaced_timesteps(3), eta=1.0, generator=g)

    first, second, other = run(7), run(7), run(8)
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


MEMORY_PROBE = textwrap.dedent("""
    import sys, torch
    from MedDiffFMLogic.network import TINY
    from MedDiffFMLogic.sampling import Conditions, SlidingWindowEstimator, make_generator, sample, spaced_timesteps
    from MedDiffFMLogic.schedules import alphas_cumprod

    class ConvDenoiser(torch.nn.Module):
        # A one-layer stand-in for the UNet: the sampler's own memory is what is measured here.
        config = TINY
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv3d(1, 1, 3, padding=1)
        def forward(self, x, timesteps, region=None, coords=None, anatomy=None):
            return self.conv(x) + coords[:, :1]

    torch.set_num_threads(1)
    net, a = ConvDenoiser(), alphas_cumprod()
    warm = SlidingWindowEstimator(net, (32, 32, 32), Conditions(region=1))
    sample(warm, a, torch.randn(1, 1, 32, 32, 32), spaced_timesteps(1))
    def status_kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    # ru_maxrss survives fork and exec, so the parent's size would mask ours: reset the high-water mark
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status_kib("VmRSS")
    shape = tuple(int(s) for s in sys.argv[1:])
    est = SlidingWindowEstimator(net, shape, Conditions(region=1))
    sample(est, a, torch.randn((1, 1) + shape, generator=make_generator(0)), spaced_timesteps(2))
    print(status_kib("VmHWM") - base)
""")


def _peak_growth_kib(shape):
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, *map(str, shape)], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak memory from /proc")
def test_peak_memory_grows_less_than_the_volume():
    # large enough that allocator noise (a few MB) is small beside a volume (18 MB)
    small = _peak_growth_kib((192, 192, 128))
    large = _peak_growth_kib((384, 192, 128))
    volume_kib = 192 * 192 * 128 * 4 / 1024
    # twice the volume: peak memory grows by less than 2.5x, and only by a few volume-sized arrays
    assert large < 2.5 * small, (small, large)
    assert large - small < 8 * volume_kib, (small / volume_kib, large / volume_kib)


def test_auto_window_batch_fits_the_budget():
    from MedDiffFMLogic.network import PAPER, TINY
    from MedDiffFMLogic.sampling import AUTO_BATCH_MAX, auto_window_batch

    assert auto_window_batch(TINY.channels[0], (32, 32, 32)) == AUTO_BATCH_MAX
    assert auto_window_batch(PAPER.channels[0], (128, 128, 128)) == 1  # 268 MB per window
    assert auto_window_batch(PAPER.channels[0], (64, 64, 64)) == 1  # ~0.8 GB peak per window
    assert auto_window_batch(16, (64, 64, 64)) == 2  # the small preset


def test_bf16_precision_is_close_and_fp16_needs_cuda(tiny_net):
    torch.manual_seed(0)
    x = torch.randn(1, 1, 40, 36, 32)
    exact = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=1))(x, 300).clone()
    bf16 = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=1), WindowConfig(precision="bf16"))(x, 300)
    assert bf16.dtype == torch.float32  # blending and updates stay in float32
    assert (bf16 - exact).abs().max() < 0.05 * exact.abs().max()
    with pytest.raises(ValueError, match="CUDA"):
        SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(), WindowConfig(precision="fp16"), device="cpu")
    with pytest.raises(ValueError, match="precision"):
        WindowConfig(precision="int8")


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a network and raises torch's out-of-memory error for calls over `limit` windows, as a GPU
    does when a batch does not fit."""

    def __init__(self, net, limit):
        super().__init__()
        self.net, self.limit, self.calls = net, limit, []
        self.config = net.config

    def forward(self, x, timesteps, **kwargs):
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return self.net(x, timesteps, **kwargs)


def test_out_of_memory_falls_back_to_fewer_windows_per_call(tiny_net):
    from MedDiffFMLogic.errors import ResourceError

    torch.manual_seed(0)
    x = torch.randn(1, 1, 56, 56, 40)
    exact = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=1), WindowConfig(batch=1))(x, 300).clone()
    flaky = _OutOfMemoryAbove(tiny_net, limit=2)
    estimator = SlidingWindowEstimator(flaky, x.shape[2:], Conditions(region=1), WindowConfig(batch=4))
    with pytest.warns(UserWarning, match="going on with 2"):
        eps = estimator(x, 300)
    torch.testing.assert_close(eps, exact, rtol=1e-4, atol=1e-5)
    assert estimator.batch == 2
    flaky.calls.clear()
    estimator(x, 300)  # the next step keeps the smaller batch: no more failed calls
    assert flaky.calls == [2, 2, 2, 2]
    with pytest.raises(ResourceError, match="--window"):
        SlidingWindowEstimator(_OutOfMemoryAbove(tiny_net, limit=0), x.shape[2:], Conditions(), WindowConfig(batch=1))(x, 300)


def test_a_run_too_large_for_memory_is_refused_before_it_starts(tiny_net, monkeypatch):
    import MedDiffFMLogic.sampling as sampling
    from MedDiffFMLogic.errors import ResourceError

    shape = (64, 64, 64)
    need = sampling.estimate_peak_bytes(shape, tiny_net.config.channels[0], (32, 32, 32), 4)
    monkeypatch.setattr(sampling, "available_memory", lambda device: need - 1)
    with pytest.raises(ResourceError, match="--window-batch"):
        SlidingWindowEstimator(tiny_net, shape, Conditions(), WindowConfig(batch=4))
    monkeypatch.setattr(sampling, "available_memory", lambda device: 1000)
    with pytest.raises(ResourceError, match="crop the volume"):
        SlidingWindowEstimator(tiny_net, shape, Conditions())
    monkeypatch.setattr(sampling, "available_memory", lambda device: need)
    assert len(SlidingWindowEstimator(tiny_net, shape, Conditions(), WindowConfig(batch=4))) == 27
