"""The real-scan benchmark (benchmarks/realct.py): its reader, masks and targets behave as they should,
and --quick goes end to end on a synthetic stand-in head (always) and on Debian's head CT (only where
invesalius-examples is installed; the GPL data is never part of the repository)."""

from __future__ import annotations

import importlib.util
import io
import json
import math
import plistlib
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def realct():
    spec = importlib.util.spec_from_file_location("realct", ROOT / "benchmarks" / "realct.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["realct"] = module  # its dataclass looks its module up while being defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("realct", None)


def write_inv3(path: Path, volume: np.ndarray, spacing=(0.5, 0.5, 2.0)) -> Path:
    """A minimal InVesalius project: main.plist and matrix.dat in a gzipped tar, as Cranium.inv3 is."""
    meta = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(volume.shape)},
            "modality": "CT", "spacing": list(spacing)}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("main.plist", plistlib.dumps(meta)), ("matrix.dat", volume.astype("<i2").tobytes())):
            info = tarfile.TarInfo(f"tmpproject/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_reader_orients_and_caches_the_project(realct, tmp_path):
    volume = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) - 30
    source = write_inv3(tmp_path / "head.inv3", volume)
    cache = tmp_path / "cache"
    image = realct.read_cranium(source, cache)
    got = realct.arr(image)
    # rows come back flipped (InVesalius stores them bottom-up), slices and columns as stored
    assert np.array_equal(got, volume[:, ::-1])
    assert image.GetSpacing() == (0.5, 0.5, 2.0)
    assert np.allclose(image.TransformIndexToPhysicalPoint((0, 0, 0)), (-1.0, -0.75, -2.0))  # centred
    cached = list(cache.glob("*.nrrd"))
    assert len(cached) == 1
    again = realct.read_cranium(source, cache)  # from the cache: same voxels and grid
    assert np.array_equal(realct.arr(again), got) and again.GetSpacing() == image.GetSpacing()
    with pytest.raises(FileNotFoundError, match="invesalius-examples"):
        realct.read_cranium(tmp_path / "absent.inv3", cache)


def test_masks_and_lesion_on_the_synthetic_head(realct):
    image = realct.synthetic_head()
    hu, spacing = realct.arr(image), image.GetSpacing()
    head = realct.head_mask(hu, spacing)
    brain = realct.brain_mask(hu, spacing, head)
    holder = (hu > 100) & (hu < 300)  # 150 HU: nothing else in the made-up head lies there
    assert holder.any() and not head[holder].any(), "the head holder is not part of the head"
    assert brain.any() and not brain[hu > 300].any(), "no skull in the brain"
    for side in (-1.0, 1.0):  # a ventricle's centre (CSF, 6 HU) is not brain; brain lies 20 mm to its side
        x, y, z = image.TransformPhysicalPointToIndex((side * 12.0, 0.0, -5.0))
        assert abs(hu[z, y, x] - 6.0) < 15.0 and not brain[z, y, x]
        x, y, z = image.TransformPhysicalPointToIndex((side * 32.0, 0.0, -5.0))
        assert brain[z, y, x]
    assert head[brain].all()
    centre = tuple(int(c) for c in np.array(brain.shape) // 2)
    added, lesion = realct.lesion_profile(brain.shape, spacing, centre)
    radius = realct.LESION_DIAMETER_MM / 2.0
    assert lesion[centre] and math.isclose(added[centre], realct.LESION_HU, rel_tol=1e-3)
    assert abs(lesion.sum() * np.prod(spacing) - 4.0 / 3.0 * np.pi * radius**3) < 0.25 * 4.0 / 3.0 * np.pi * radius**3
    assert added[~lesion].max() <= realct.LESION_HU / 2.0 + 1e-6  # the soft edge: half the contrast at the surface
    assert added[~lesion].max() > 1.0


def test_targets_say_which_are_met(realct):
    row = lambda ours, noisy, bm4d: {"methods": {"meddifffm": ours, "noisy": noisy, "bm4d": bm4d}}  # noqa: E731
    p = lambda a, b: {"psnr": a, "ssim": b}  # noqa: E731
    document = {
        "denoise": {"dose_0.25": row(p(30, 0.8), p(28, 0.7), p(31, 0.85)), "dose_0.1": row(p(27, 0.69), p(25, 0.7), p(26, 0.6))},
        "superres": {"methods": {"meddifffm": p(35, 0.9), "bspline": p(34, 0.91)}},
        "anomaly": {"map_max_on_lesion": True},
    }
    t = realct.targets(document)
    assert t["denoise_not_worse_than_noisy"]["met"] is False  # SSIM 0.69 < 0.70 at 10 %
    assert t["denoise_above_bm4d"]["met"] is False
    assert t["superres_above_bspline"]["met"] is False  # PSNR above, SSIM below
    assert t["anomaly_max_on_lesion"]["met"] is True
    del document["denoise"]["dose_0.1"]["methods"]["bm4d"]
    assert realct.targets(document)["denoise_above_bm4d"]["met"] is None


def check_document(doc: dict) -> None:
    assert doc["plan"]["crop"] is not None and doc["scan"]["head_voxels_evaluated"] > 0
    assert doc["scan"]["own_noise_hu_estimated"] > 0
    assert set(doc["denoise"]) == {"dose_0.25", "dose_0.1"}
    for row in doc["denoise"].values():
        assert row["noise_hu_added"] > 0 and math.isfinite(row["noise_hu_in_head"])
        expected = {"noisy", "meddifffm", "nlm"} | ({"bm4d"} if importlib.util.find_spec("bm4d") else set())
        assert set(row["methods"]) == expected
        for m in row["methods"].values():
            assert all(math.isfinite(m[k]) for k in ("psnr", "ssim", "psnr_gain", "ssim_gain")), m
        assert row["methods"]["noisy"]["psnr_gain"] == 0
    # more dose, less noise
    assert doc["denoise"]["dose_0.25"]["noise_hu_added"] < doc["denoise"]["dose_0.1"]["noise_hu_added"]
    sr = doc["superres"]
    assert (sr["thick_mm"], sr["thin_mm"]) == (4.5, 1.5) or doc["scan"]["spacing_mm"][2] != 1.5
    assert set(sr["methods"]) == {"trilinear", "bspline", "meddifffm"}
    assert all(math.isfinite(v) for m in sr["methods"].values() for v in m.values())
    an = doc["anomaly"]
    assert isinstance(an["map_max_on_lesion"], bool) and 0.0 <= an["voxel_auroc_in_brain"] <= 1.0
    assert an["lesion"]["voxels"] > 0 and math.isfinite(an["score_with_lesion"])
    assert set(doc["targets"]) == {"denoise_not_worse_than_noisy", "denoise_above_bm4d", "superres_above_bspline",
                                   "anomaly_max_on_lesion"}
    assert all(t["met"] in (True, False, None) for t in doc["targets"].values())


def run_quick(realct, tmp_path, capsys, *extra) -> dict:
    assert realct.main(["--quick", "--out", str(tmp_path), "--cache", str(tmp_path / "cache"), *extra]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "quick" / "realct.json").read_text())
    assert printed == saved
    return saved


def test_quick_run_on_a_synthetic_head(realct, tmp_path, capsys):
    doc = run_quick(realct, tmp_path, capsys, "--synthetic", "--figures", str(tmp_path / "fig"))
    assert doc["scan"]["source"].startswith("synthetic")
    check_document(doc)
    assert {p.name for p in (tmp_path / "fig").glob("*.png")} == {
        "realct_denoise_dose0.25.png", "realct_denoise_dose0.1.png", "realct_superres.png", "realct_anomaly.png"}


def test_quick_run_on_the_debian_head_ct(realct, tmp_path, capsys):
    if not realct.CRANIUM.is_file():
        pytest.skip(f"{realct.CRANIUM} is not installed (apt-get install invesalius-examples)")
    doc = run_quick(realct, tmp_path, capsys)
    assert doc["scan"]["size_xyz"] == [256, 256, 108] and "GPL-2" in doc["scan"]["source"]
    check_document(doc)
