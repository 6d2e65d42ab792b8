"""Skipping sliding windows: windows with no active voxel are not evaluated (Conditions.active).

Exactness: a skipped window holds no active voxel, so every active voxel is covered by the same
evaluated windows with and without skipping, and one step's estimate there is bit-identical with one
window per network call (same arithmetic in the same order). With several windows per call the
batches are composed differently; on this CPU that was bit-identical too, and is checked to float
rounding. Over several steps:
- inpainting stays exact: everything outside the generated region is replaced by the same known image
  (same noise) after every step, so the evaluated windows see the same x_t;
- the air skip does not: the body's windows also see the air beside the body, which the skipped
  windows' neighbours estimated a little differently; the body changes by float-noise-sized amounts.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import make_tiny_net
from MedDiffFMLogic import ctio
from MedDiffFMLogic.algorithms import denoise_data_step, diffpir, diffpir_start
from MedDiffFMLogic.cli import build_parser, main
from MedDiffFMLogic.controlnet import ControlNetConfig, MedDiffFMControlNet
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY
from MedDiffFMLogic.regions import hu_to_unit
from MedDiffFMLogic.sampling import (
    Conditions, SlidingWindowEstimator, WindowConfig, make_generator, sample, spaced_timesteps,
)
from MedDiffFMLogic.schedules import alphas_cumprod
from MedDiffFMLogic.tasks import anomaly, denoise, inpaint, prepare, superres
from MedDiffFMLogic.tasks.common import air_value, body_mask, load_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class CountingNet(torch.nn.Module):
    """A denoiser wrapper that counts the windows it evaluates."""

    def __init__(self, net):
        super().__init__()
        self.net, self.config, self.windows = net, net.config, 0

    def forward(self, x, timesteps, **kwargs):
        self.windows += len(x)
        return self.net(x, timesteps, **kwargs)


# ------------------------------------------------------------------------------------------- estimator


def test_every_voxel_active_is_bit_identical_to_no_skipping(tiny_net):
    a = alphas_cumprod()
    x = torch.randn(1, 1, 40, 36, 20, generator=make_generator(3))
    plain = SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(region=0))
    everywhere = SlidingWindowEstimator(
        tiny_net, x.shape[2:], Conditions(region=0, active=torch.ones(40, 36, 20, dtype=torch.bool)), alphas_cumprod=a,
    )
    assert everywhere.active_windows == len(everywhere) == len(plain) == 4
    assert torch.equal(plain(x, 200).clone(), everywhere(x, 200))
    with pytest.raises(ValueError, match="alphas_cumprod"):
        SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(active=torch.ones(40, 36, 20, dtype=torch.bool)))
    with pytest.raises(ValueError, match="bool tensor"):
        SlidingWindowEstimator(tiny_net, x.shape[2:], Conditions(active=torch.ones(40, 36, 21, dtype=torch.bool)),
                               alphas_cumprod=a)


def _body_phantom(shape=(80, 32, 32), body_from=60, noise_hu=200.0):
    """HU volume (z, y, x): air with low-dose-like noise, a soft-tissue body with an air-filled lung
    in its last `shape[0] - body_from` slices."""
    rng = np.random.default_rng(0)
    hu = np.full(shape, -1000.0, np.float32)
    hu[body_from:, 4:28, 4:28] = 40.0
    hu[body_from + 4 : shape[0] - 4, 10:22, 10:22] = -850.0
    return hu + rng.normal(0.0, noise_hu, shape).astype(np.float32)


def test_body_mask_fills_the_lungs_ignores_noisy_air_and_adds_a_margin():
    hu = _body_phantom()
    body = body_mask(hu)
    assert body[64:76, 10:22, 10:22].all()  # the lung is inside the body
    assert body[60:, 4:28, 4:28].all()
    assert not body[:56].any()  # 200 HU noise in the air is not body; the margin reaches 3 voxels out
    assert body[57, 16, 16] and not body[56, 16, 16]
    assert air_value("chest") == pytest.approx(float(hu_to_unit(np.float32(-1000.0), "chest")))
    assert air_value("abdomen") == -1.0 and -0.6 < air_value("chest") < -0.5


@pytest.mark.parametrize("batch", [1, None])
def test_air_skip_runs_fewer_windows_close_in_the_body_air_where_skipped(batch):
    a = alphas_cumprod()
    hu = _body_phantom()
    y = torch.from_numpy(hu_to_unit(hu, "abdomen"))[None, None]
    body = torch.from_numpy(body_mask(hu))
    inside = body.nonzero()[:, 0].min().item()  # 57: the body's first slice (60) less the 3-voxel margin
    air = air_value("abdomen")
    first, results, counts = [], [], []
    for skip in (False, True):
        net = CountingNet(make_tiny_net())
        conditions = Conditions(region=2, active=body if skip else None, inactive_value=air)
        estimator = SlidingWindowEstimator(net, y.shape[2:], conditions, WindowConfig(batch=batch),
                                           alphas_cumprod=a if skip else None)
        g = make_generator(5)
        x = torch.randn(y.shape, generator=g)
        first.append(estimator(x, 999).clone())
        net.windows = 0
        # plain DDIM: the last x0 estimate is the output, so skipped voxels must come out as air exactly
        results.append(sample(estimator, a, x, spaced_timesteps(2), eta=0.0, generator=g))
        counts.append((net.windows, estimator.active_windows, len(estimator)))
    (full, skipped), (full_n, skip_n) = results, counts
    assert full_n == (6, 3, 3) and skip_n == (2, 1, 3)  # z: windows at 0, 24 and 48; only the last holds body
    # One step: a skipped window covers no body voxel, so the body's estimate is the same windows' blend.
    if batch == 1:
        assert torch.equal(first[0][..., inside:, :, :], first[1][..., inside:, :, :])
    else:
        # measured: up to 1.4e-5 (eps is of order 1): a batch of 3 windows against one of 1 per call
        torch.testing.assert_close(first[0][..., inside:, :, :], first[1][..., inside:, :, :], rtol=1e-4, atol=1e-4)
    # Later steps: the body's windows also see the air next to it, which the first step changed a little
    # (measured: at most 0.0023 = 0.4 HU, on average 2e-5, over the body and its margin).
    difference = (full - skipped)[..., inside:, :, :].abs()
    assert difference.max() < 5e-3 and difference.mean() < 1e-4
    # voxels no evaluated window covers (z < 48) are air; in between (48..56) the last window's estimate
    torch.testing.assert_close(skipped[..., :48, :, :], torch.full_like(skipped[..., :48, :, :], air), rtol=0, atol=1e-5)
    assert not torch.equal(full[..., :48, :, :], skipped[..., :48, :, :])


def test_air_skip_with_diffpir_denoising_changes_the_body_by_float_noise_only(tiny_net):
    a = alphas_cumprod()
    hu = _body_phantom(noise_hu=30.0)
    y = torch.from_numpy(hu_to_unit(hu, "chest"))[None, None]
    body = torch.from_numpy(body_mask(hu))
    sigma_n, t_start = 30.0 / 900.0, 60
    out = []
    for active in (None, body):
        estimator = SlidingWindowEstimator(
            tiny_net, y.shape[2:], Conditions(region=1, active=active, inactive_value=air_value("chest")),
            WindowConfig(batch=1), alphas_cumprod=a,
        )
        g = make_generator(1)
        x = diffpir_start(y, t_start, sigma_n, a, g)
        out.append(diffpir(estimator, a, x, spaced_timesteps(3, t_start), denoise_data_step(y), sigma_n, 10.0, 0.0, g))
    difference = (out[0] - out[1])[..., 57:, :, :].abs()  # measured: at most 0.001 (0.9 HU), mean 3e-5
    assert difference.max() < 5e-3 and difference.mean() < 1e-4
    # where skipped, the prior says air and the data step pulls toward the noisy input: between them
    air, noisy = air_value("chest"), y[..., :48, :, :]
    gap = (out[1][..., :48, :, :] - air).abs()
    assert gap.max() < (noisy - air).abs().max() and gap.mean() < 0.5 * (noisy - air).abs().mean()


# ------------------------------------------------------------------------------------------- inpaint


def _two_lesion_case():
    """A 4 mm-grid CT with two small lesions 60 mm apart along z: the crop box spans both, and the
    window between them holds no generated voxel."""
    hu = np.full((72, 32, 32), 40.0, np.float32) + np.random.default_rng(2).normal(0, 10, (72, 32, 32)).astype(np.float32)
    mask = np.zeros(hu.shape, bool)
    mask[4:9, 12:18, 12:18] = True
    mask[63:68, 14:20, 10:16] = True
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((4.0, 4.0, 4.0))
    return image, mask


def test_inpaint_skips_windows_without_generated_voxels_and_the_result_is_identical(tiny_model_card):
    image, mask = _two_lesion_case()
    model = load_model(str(tiny_model_card), "cpu")
    counting = CountingNet(model.net)
    model.net = counting
    seen = []

    class NoSkip(SlidingWindowEstimator):
        """The estimator with skipping turned off: every window of the box runs."""

        def __init__(self, denoiser, shape, conditions, *args, **kwargs):
            super().__init__(denoiser, shape, Conditions(**{**conditions.__dict__, "active": None}), *args, **kwargs)
            seen.append((self.active_windows, len(self)))

    def run(windows):
        counting.windows = 0
        out = inpaint.regenerate(image, mask, model, region="abdomen", steps=3, jump_length=2, resamplings=2,
                                 eta=1.0, seed=3, windows=windows)
        return out, counting.windows

    for windows in (WindowConfig(batch=1), WindowConfig()):
        model.estimator = None
        skipped, n_skipped = run(windows)
        model.estimator = NoSkip
        full, n_full = run(windows)
        assert seen[-1] == (3, 3)  # z windows at 0, 24 and 40 of the 72-slice box
        assert n_full == 3 * n_skipped // 2 > 0  # two of the three windows hold a lesion
        if windows.batch == 1:
            np.testing.assert_array_equal(skipped[mask], full[mask])
        else:
            np.testing.assert_allclose(skipped[mask], full[mask], rtol=1e-5, atol=1e-3)  # HU


def test_a_single_compact_lesion_leaves_no_window_to_skip(tiny_model_card):
    """The crop box is the lesion's box plus half a window on each side, so each window of it reaches
    into the lesion's box along every axis; a compact lesion (here a ball of radius 10 voxels, larger
    than half a window) fills enough of its box that every window holds some of it."""
    zz, yy, xx = np.mgrid[:64, :64, :64]
    mask = (zz - 30) ** 2 + (yy - 33) ** 2 + (xx - 31) ** 2 <= 10**2
    image = sitk.GetImageFromArray(np.full(mask.shape, 40.0, np.float32))
    image.SetSpacing((4.0, 4.0, 4.0))
    made, recording = _recording()
    model = load_model(str(tiny_model_card), "cpu", estimator=recording)
    inpaint.regenerate(image, mask, model, region="abdomen", steps=1, jump_length=1, resamplings=1, eta=1.0,
                       seed=0, windows=WindowConfig())
    assert [_windows(e) for e in made] == [(8, 8)]


def _recording() -> tuple[list, type]:
    """An estimator class that records every instance made of it (in the list), to hand to load_model."""
    made = []

    class Recording(SlidingWindowEstimator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    return made, Recording


def _windows(estimator) -> tuple[int, int]:
    """(windows the network evaluates, all windows)."""
    return estimator.active_windows, len(estimator)


# ------------------------------------------------------------------------------------------- CLI


def test_skip_air_flag_parses_and_reaches_the_estimator(tmp_path, tiny_model_card, monkeypatch, capsys):
    parser = build_parser()
    for command in ("denoise", "anomaly", "superres"):
        args = parser.parse_args([command, "in.nii.gz", "-o", "out.nii.gz", "--skip-air"])
        assert args.skip_air is True
        assert parser.parse_args([command, "in.nii.gz", "-o", "out.nii.gz"]).skip_air is False
    with pytest.raises(SystemExit):  # inpainting skips exactly without being asked; synthesize has no input
        parser.parse_args(["inpaint", "in.nii.gz", "--mask", "m.nii.gz", "-o", "o.nii.gz", "--skip-air"])
    assert denoise.DenoiseConfig().skip_air is False and anomaly.AnomalyConfig().skip_air is False
    assert superres.SuperresConfig().skip_air is False

    hu = _body_phantom(shape=(80, 32, 32), noise_hu=20.0)
    ct = ctio.write_image(ctio.from_array(hu, _grid(hu.shape)), tmp_path / "ct.nrrd")
    made, recording = _recording()
    # main() loads the model itself: replace the default estimator of the one place that makes them.
    monkeypatch.setattr(prepare, "SlidingWindowEstimator", recording)
    for flag in ([], ["--skip-air"]):
        code = main(["denoise", str(ct), "-o", str(tmp_path / "out.nrrd"), "--model", str(tiny_model_card),
                     "--steps", "1", "--noise-level", "20", "--region", "abdomen", "--progress", "json", *flag])
        assert code == 0
    plain, skipping = made
    assert plain.conditions.active is None and plain.active_windows == len(plain) == 3
    assert skipping.conditions.active is not None and skipping.conditions.inactive_value == -1.0
    assert skipping.active_windows == 1 and len(skipping) == 3
    assert '"message": "1 of 3 windows per step need the network"' in capsys.readouterr().out


def _grid(shape) -> sitk.Image:
    image = sitk.Image([int(s) for s in reversed(shape)], sitk.sitkFloat32)
    image.SetSpacing((4.0, 4.0, 4.0))
    return image


def test_anomaly_and_superres_skip_air_run_fewer_windows(tmp_path, tiny_model_card):
    hu = _body_phantom(shape=(84, 32, 32), body_from=60, noise_hu=20.0)
    made, recording = _recording()
    model = load_model(str(tiny_model_card), "cpu", estimator=recording)
    image = ctio.from_array(hu, _grid(hu.shape))
    config = anomaly.AnomalyConfig(region="abdomen", steps=1, t_start=500, skip_air=True)
    result = anomaly.anomaly_map(image, config, model)
    assert _windows(made[-1]) == (2, 4)  # z windows at 0, 24, 48 and 52: the last two reach the body
    # the air only skipped windows cover (z < 48) is reconstructed as air: no anomaly there
    assert np.abs(ctio.to_array(result.map)[:46]).max() < 0.01

    # superres: a 12 mm thick-slice scan of the same body, 3x along z onto the 4 mm working grid
    base = make_tiny_net()
    net = MedDiffFMControlNet.from_base(base, ControlNetConfig(task="superres", conditioning_channels=8))
    card = save_model(net, tmp_path, name="tiny-superres", kind="controlnet", architecture=TINY.to_dict(),
                      working_spacing=(4.0, 4.0, 4.0), base_model="tiny-test", control=net.config.to_dict())
    thick = hu.reshape(28, 3, 32, 32).mean(axis=1)
    low = sitk.GetImageFromArray(thick)
    low.SetSpacing((4.0, 4.0, 12.0))
    controlled = load_model(str(tiny_model_card), "cpu", str(card), estimator=recording)
    superres.super_resolve(low, superres.SuperresConfig(region="abdomen", factor=3, steps=1, skip_air=True), controlled)
    assert _windows(made[-1]) == (2, 4)
