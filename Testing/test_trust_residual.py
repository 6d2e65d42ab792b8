"""Issue 15, "warn when the result is suspicious": a denoise whose residual (input - output) has
structure, not noise, is flagged; one that took away exactly the noise is not."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from conftest import make_tiny_net
from MedDiffFMLogic import ctio
from MedDiffFMLogic.metrics import EDGE_BLUR_WARN_VOXELS, denoise_residual_warning, edge_blur_voxels
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom, simulate_low_dose
from MedDiffFMLogic.tasks import denoise


@functools.lru_cache(maxsize=None)  # the images are only read
def _clean_and_low_dose(region: str, dose: float, seed: int = 4) -> tuple[sitk.Image, sitk.Image]:
    clean = make_phantom(PhantomConfig(region=region, size=(64, 64, 8), spacing=(2.0, 2.0, 2.5), seed=seed)).image
    return clean, simulate_low_dose(clean, dose, seed=seed)


@pytest.mark.parametrize("region", ["chest", "abdomen", "head_neck"])
@pytest.mark.parametrize("noise_scale", [1.0, 6.0])  # the simulated quarter dose's noise, and 6 times it
def test_a_denoise_that_took_away_noise_passes_and_one_that_blurred_is_flagged(region, noise_scale):
    clean, low = _clean_and_low_dose(region, 0.25)
    c = ctio.to_array(clean)
    noisy = (c + noise_scale * (ctio.to_array(low) - c)).astype(np.float32)
    # A perfect denoise (the residual is the noise), and one that kept half of the noise.
    for good in (c, (c + noisy) / 2):
        assert edge_blur_voxels(noisy, good) < 0.5 * EDGE_BLUR_WARN_VOXELS
        assert denoise_residual_warning(noisy, good) is None
    # A damaging one: heavily blurred, which takes edges away with the noise.
    blurred = ndimage.gaussian_filter(noisy.astype(np.float64), 2.0).astype(np.float32)
    assert edge_blur_voxels(noisy, blurred) > 1.3 * EDGE_BLUR_WARN_VOXELS
    assert "took away structure" in denoise_residual_warning(noisy, blurred)


def test_voxels_left_unchanged_are_not_counted():
    # Air kept exactly (beyond the abdomen window) must not make the rest look structured.
    clean, low = _clean_and_low_dose("abdomen", 0.25)
    c, n = ctio.to_array(clean), ctio.to_array(low)
    kept = np.where(c < -300, n, c)
    assert edge_blur_voxels(n, kept) < 0.5 * EDGE_BLUR_WARN_VOXELS
    assert edge_blur_voxels(n, n) == 0.0


@pytest.fixture(scope="module")
def base_card(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    return str(save_model(make_tiny_net(), folder, name="tiny-residual", kind="base", architecture=TINY.to_dict(),
                          working_spacing=(4.0, 4.0, 4.0)))


@pytest.mark.usefixtures("one_torch_thread")
def test_denoise_run_warns_about_a_blurred_result(tmp_path, base_card, monkeypatch):
    clean, low = _clean_and_low_dose("chest", 0.25)
    path = ctio.write_image(low, tmp_path / "low.nrrd")
    outputs = {"clean": clean, "blurred": sitk.SmoothingRecursiveGaussian(low, 4.0)}
    config = denoise.DenoiseConfig(region="chest", steps=1)
    for name, result in outputs.items():
        monkeypatch.setattr(denoise, "denoise_image", lambda image, *a, **k: (
            result, denoise.DenoiseInfo(10.0, 10.0, 50, [50], True)))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            denoise.run(config, path, tmp_path / f"{name}.nrrd")
        flagged = [w for w in caught if "took away structure" in str(w.message)]
        assert bool(flagged) == (name == "blurred"), name
        assert (tmp_path / f"{name}.nrrd").exists()  # a warning, not an error: the result is written
