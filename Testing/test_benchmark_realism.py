"""The realism benchmark: its statistics behave as they should, and a quick run on the abdomen slice of
pydicom-data goes end to end (skipped when pydicom-data is not installed; no GPL data is needed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def realism():
    spec = importlib.util.spec_from_file_location("realism", ROOT / "benchmarks" / "realism.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def disc_slice(n=160, pixel=1.0, seed=0, smooth=0.0, vessels=0):
    """A 40 HU disc of radius 60 mm with noise (white, or smoothed), optionally with a lung of small dots."""
    rng = np.random.default_rng(seed)
    c = (np.arange(n) - (n - 1) / 2.0) * pixel
    yy, xx = np.meshgrid(c, c, indexing="ij")
    hu = np.where(xx**2 + yy**2 <= 60.0**2, 40.0, -1000.0)
    noise = rng.normal(0.0, 15.0, hu.shape)
    if smooth:
        noise = ndimage.gaussian_filter(noise, smooth)
        noise *= 15.0 / noise.std()
    hu = hu + noise
    if vessels:
        lung = (xx - 20) ** 2 + yy**2 <= 25.0**2
        hu[lung] = -850.0 + rng.normal(0.0, 15.0, lung.sum())
        dots = lung & (rng.random(hu.shape) < vessels)
        hu[ndimage.binary_dilation(dots)] = 20.0
    return hu[None].astype(np.float32)


def test_statistics_tell_texture_and_vessels_apart(realism):
    white, same, smooth = disc_slice(seed=1), disc_slice(seed=2), disc_slice(seed=3, smooth=1.5)
    s_white, s_same, s_smooth = (realism.statistics(a, 1.0, False) for a in (white, same, smooth))
    assert s_white["patches"] >= 3
    d_same = realism.compare(s_white, s_same)["distances"]
    d_smooth = realism.compare(s_white, s_smooth)["distances"]
    # the same kind of image is close; correlated noise has a different spectrum and fewer strong edges
    assert d_same["nps_w1"] < 0.3 * d_smooth["nps_w1"], (d_same, d_smooth)
    assert d_same["gradient_w1"] < 0.3 * d_smooth["gradient_w1"], (d_same, d_smooth)
    assert d_same["hu_w1"] < 2.0
    f, w = s_smooth["nps"]
    assert np.isclose(w.sum(), 1.0) and (f * w).sum() < (s_white["nps"][0] * s_white["nps"][1]).sum()
    # lung vessels: more dots, a larger fraction of the lung above -500 HU
    few, many = disc_slice(vessels=0.005), disc_slice(vessels=0.03)
    fractions = [realism.lung_vessel_fraction(a, realism.body_mask(a, 1.0), 1.0) for a in (few, many)]
    assert 0.0 < fractions[0] < fractions[1] < 0.5, fractions


def test_body_mask_drops_the_table(realism):
    hu = disc_slice(seed=4)
    hu[0, 148:153, 10:150] = 300.0  # a couch below the patient, not touching it
    body = realism.body_mask(hu, 1.0)
    assert not body[0, 148:153].any()
    assert body[0, 80, 80]


def test_quick_run_on_the_abdomen_slice(realism, tmp_path, capsys):
    if realism.load_reference("abdomen", tmp_path, False)[0] is None:
        pytest.skip("pydicom-data is not installed (pip install pydicom-data)")
    out = tmp_path / "realism.json"
    assert realism.main(["--quick", "--only", "abdomen", "--no-download", "--output", str(out),
                         "--figures", str(tmp_path / "fig")]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved
    entry = saved["comparisons"]["abdomen"]
    assert entry["phantom_region"] == "abdomen"
    for key in ("hu_w1", "gradient_w1"):
        assert np.isfinite(entry["distances"][key]) and entry["distances"][key] >= 0
    png = tmp_path / "fig" / "realism_abdomen.png"
    assert png.is_file() and png.stat().st_size < 300_000
