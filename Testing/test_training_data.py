"""Training data: manifests, preprocessing and its cache, the three multi-level sampling operations and
their whole-volume coordinates, control volumes, phantom sets, and config files."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedDiffFMLogic import ctio
from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.network import PRESETS, coordinate_grid, whole_volume_axes
from MedDiffFMLogic.regions import hu_to_unit, region_index
from MedDiffFMLogic.controls import lesion_control
from MedDiffFMLogic.training.commands import CONFIG_DIR
from MedDiffFMLogic.training.config import (
    DataConfig, PhantomSetConfig, TrainConfig, config_from_dict, load_config, read_config_file,
)
from MedDiffFMLogic.training.data import (
    TrainingData, Volume, coordinates_at, level_positions, lowres_volume, make_sample, preprocess,
)
from MedDiffFMLogic.training.manifest import Record, read_manifest, write_manifest
from MedDiffFMLogic.training.phantomset import make_phantom_set

W = 16


def _volume(shape=(20, 40, 52), lesion=True) -> Volume:
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, shape).astype(np.float32)
    labels = rng.integers(0, 119, shape).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[5:8, 30:34, 40:45] = 1
    return Volume(Record("x.nii.gz", "chest"), image, labels, mask if lesion else None, None,
                  np.argwhere(mask) if lesion else None)


def test_native_crop_coordinates_are_the_sub_grid_of_the_whole_volume_coordinates():
    vol = _volume()
    whole = coordinate_grid(whole_volume_axes(vol.shape))[0]
    for seed in range(5):
        rng = np.random.default_rng(seed)
        s = make_sample(vol, W, "native", rng)
        z, y, x = (int(p[0]) for p in s.positions)
        assert s.coords.shape == (3, W, W, W)
        assert torch.equal(s.coords, whole[:, z : z + W, y : y + W, x : x + W])
        assert torch.equal(s.image[0], torch.from_numpy(vol.image[z : z + W, y : y + W, x : x + W]))
        assert torch.equal(s.anatomy, torch.from_numpy(vol.labels[z : z + W, y : y + W, x : x + W]).long())
        assert s.region == region_index("chest")


def test_whole_level_spans_the_volume_and_double_level_a_twice_window_crop():
    vol = _volume()
    s = make_sample(vol, W, "whole", np.random.default_rng(0))
    for axis in range(3):
        line = s.coords[axis].movedim(axis, 0)[:, 0, 0]
        assert torch.allclose(line, torch.linspace(-1, 1, W), atol=1e-6)
    # corners of a resized whole volume are the volume's corner voxels
    assert s.image[0, 0, 0, 0] == pytest.approx(vol.image[0, 0, 0])
    assert s.image[0, -1, -1, -1] == pytest.approx(vol.image[-1, -1, -1])
    d = make_sample(vol, W, "double", np.random.default_rng(3))
    for axis, (n, pos) in enumerate(zip(vol.shape, d.positions)):
        extent = min(2 * W, n)
        assert pos[-1] - pos[0] == extent - 1  # a crop of 2 x window (or the whole axis) resized to the window
        axis_values = whole_volume_axes(vol.shape)[axis]
        line = d.coords[axis].movedim(axis, 0)[:, 0, 0]
        lo, hi = int(pos[0]), int(pos[-1])
        assert line[0] == pytest.approx(axis_values[lo].item()) and line[-1] == pytest.approx(axis_values[hi].item())


def test_short_axis_is_padded_and_its_coordinates_continue_linearly():
    vol = _volume(shape=(10, 40, 40))
    s = make_sample(vol, W, "native", np.random.default_rng(0))
    z = s.coords[0, :, 0, 0]
    assert torch.allclose(z[:10], torch.linspace(-1, 1, 10))
    step = 2.0 / 9
    assert torch.allclose(z[10:], 1 + step * torch.arange(1, W - 9), atol=1e-6)
    assert torch.equal(s.image[0, 10:], s.image[0, 9:10].expand(W - 10, -1, -1))  # replicated


def test_levels_come_with_equal_probability_and_lesion_crops_centre_on_lesions(tmp_path):
    vol = _volume()
    rng = np.random.default_rng(0)
    for _ in range(10):
        s = make_sample(vol, W, "native", rng, task="lesion", lesion_crop_probability=1.0)
        assert s.control.shape == (1, W, W, W) and (s.control > 0).any()
        assert torch.equal(s.control, lesion_control(s.control[0] > 0))
    data = TrainingData.__new__(TrainingData)
    data.level_p = np.full(3, 1 / 3)
    counts = np.bincount([int(np.random.default_rng([0, g, 1]).choice(3, p=data.level_p)) for g in range(3000)])
    assert (np.abs(counts / 3000 - 1 / 3) < 0.04).all()


def test_lowres_volume_averages_slabs_and_keeps_the_extent():
    array = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 3, 4), np.float32)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 2.0))
    image.SetOrigin((0.0, 0.0, 5.0))
    low = lowres_volume(image, 3)
    assert low.GetSize() == (4, 3, 4) and low.GetSpacing() == (1.0, 1.0, 6.0)
    values = sitk.GetArrayFromImage(low)[:, 0, 0]
    assert np.allclose(values, [1, 4, 7, 9])  # last slab completed with the last slice
    assert low.GetOrigin()[2] == pytest.approx(5.0 + 2.0)  # centre of the first slab


def _phantom_manifest(tmp_path) -> tuple[Path, PhantomSetConfig]:
    config = PhantomSetConfig(regions=("abdomen",), seeds=(0, 1), val_seeds=(9000, 9001), size=(32, 32, 24),
                              size_jitter=(0, 0, 0), spacing=(4.0, 4.0, 5.0), lesions=(1, 1))
    return make_phantom_set(config, tmp_path / "ph"), config


def test_phantom_set_manifest_preprocessing_and_cache(tmp_path):
    manifest, config = _phantom_manifest(tmp_path)
    records = read_manifest(manifest)
    assert [r.split for r in records] == ["train", "val"]
    assert all(Path(r.image).exists() and r.labels and r.lesion for r in records)
    data = DataConfig(manifest=str(manifest), spacing=(4.0, 4.0, 4.0), lowres_factor=2)
    vol = preprocess(records[0], data, "superres", tmp_path / "cache")
    ct = ctio.read_ct(records[0].image)
    assert vol.shape == (30, 32, 32)  # 24 slices of 5 mm resampled to 4 mm
    grid = ctio.resample_to_spacing(ct, (4.0, 4.0, 4.0))
    assert np.allclose(vol.image, hu_to_unit(ctio.to_array(grid), "abdomen"))
    assert vol.labels.dtype == np.uint8 and vol.lesion.any() and vol.control.shape == vol.shape
    files = sorted((tmp_path / "cache" / "preprocessed").glob("*.npy"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again = preprocess(records[0], data, "superres", tmp_path / "cache")  # read from the cache, not recomputed
    assert [f.stat().st_mtime_ns for f in files] == stamps and isinstance(again.image, np.memmap)
    # the same phantom set again costs nothing and gives the same manifest
    assert make_phantom_set(config, tmp_path / "ph") == manifest


def test_manifest_formats_and_errors(tmp_path):
    ct = tmp_path / "a.nii.gz"
    ct.write_bytes(b"x")
    (tmp_path / "m.json").write_text(json.dumps({"volumes": [{"image": "a.nii.gz", "region": "chest", "split": "val"}]}))
    (r,) = read_manifest(tmp_path / "m.json")
    assert r.image == str(tmp_path / "a.nii.gz") and r.split == "val" and r.labels is None
    write_manifest([r], tmp_path / "m.csv")
    assert read_manifest(tmp_path / "m.csv") == [r]
    for rows, message in (([{"image": "a.nii.gz", "region": "pelvis"}], "region"),
                          ([{"image": "a.nii.gz", "region": "chest", "colour": 1}], "unknown manifest fields"),
                          ([{"image": "missing.nii.gz", "region": "chest"}], "does not exist"),
                          ([{"image": "a.nii.gz", "region": "chest", "split": "dev"}], "split")):
        (tmp_path / "bad.json").write_text(json.dumps(rows))
        with pytest.raises(InputError, match=message):
            read_manifest(tmp_path / "bad.json")


def test_held_out_phantom_seeds_are_refused():
    with pytest.raises(InputError, match="held out"):
        PhantomSetConfig(seeds=(9990, 10001))
    with pytest.raises(InputError, match="overlap"):
        PhantomSetConfig(seeds=(0, 10), val_seeds=(5, 6))


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_configs_round_trip(path):
    config = load_config(path)
    assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert isinstance(config, TrainConfig)


def test_paper_config_is_the_papers_setting():
    config = load_config(CONFIG_DIR / "paper.json")
    assert config.network == PRESETS["paper"] and config.window == 128
    assert config.lr == 1e-4 and config.batch_size == 1 and config.accumulation == 4
    assert config.data.spacing == (1.0, 1.0, 1.0) and config.data.level_weights == (1.0, 1.0, 1.0)


def test_unknown_config_keys_are_errors(tmp_path):
    base = read_config_file(CONFIG_DIR / "tiny.json")
    for where, patch in (("config", {"learning_rate": 1}), ("data", {"data": {**base["data"], "spacings": [1, 1, 1]}}),
                         ("data.phantoms", {"data": {**base["data"], "phantoms": {"seed": [0, 1]}}}),
                         ("network", {"network": {"preset": "tiny", "chanels": [8]}})):
        (tmp_path / "c.json").write_text(json.dumps({**base, **patch}))
        with pytest.raises(InputError, match="unknown|bad network"):
            load_config(tmp_path / "c.json")
    with pytest.raises(InputError, match="exactly one"):
        DataConfig()
