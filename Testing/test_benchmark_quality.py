"""The quality benchmark: a --quick run with tiny random models goes end to end and writes the targets
block of issue 12 (one entry per target: measured value, threshold, met), which table.py prints."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from MedDiffFMLogic.controlnet import ControlNetConfig, MedDiffFMControlNet
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY

from conftest import make_tiny_net

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quality():
    return _load("quality")


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, str]:
    """A tiny base model at 4 mm with a lesion and a super-resolution ControlNet (random weights)."""
    folder = tmp_path_factory.mktemp("models")
    base = make_tiny_net()
    spacing = (4.0, 4.0, 4.0)
    cards = {"base": str(save_model(base, folder, name="tiny-q", kind="base", architecture=TINY.to_dict(),
                                    working_spacing=spacing))}
    for task in ("lesion", "superres"):
        torch.manual_seed(1)
        net = MedDiffFMControlNet.from_base(base, ControlNetConfig(task=task, conditioning_channels=8))
        cards[task] = str(save_model(net, folder, name=f"tiny-q-{task}", kind="controlnet", architecture=TINY.to_dict(),
                                     working_spacing=spacing, base_model="tiny-q", control=net.config.to_dict()))
    return cards


def test_superres_setting_follows_the_working_spacing(quality):
    # 1.5 mm models: 5 mm -> 1 mm becomes 4.5 mm -> 1.5 mm; the fine-tuned setting is listed when it differs
    assert quality.superres_settings((1.5, 1.5, 1.5), 3) == {"4.5mm_to_1.5mm": (4.5, 1.5, 3)}
    assert quality.superres_settings((0.8, 0.8, 0.8), 3) == {"5mm_to_1mm": (5.0, 1.0, 5), "2.4mm_to_0.8mm": (2.4, 0.8, 3)}
    assert list(quality.superres_settings((4.0, 4.0, 4.0), 5)) == ["8mm_to_4mm", "20mm_to_4mm"]


def test_targets_are_judged_against_their_thresholds(quality):
    doc = {"anomaly": {"chest": {"scans_with_lesions": 20, "scans_without": 20, "image_auroc": 0.95,
                                 "voxel_auroc_in_host_organ": 0.85}},
           "lesion": {"chest": {"masks": {"5mm": {"diameter_mm": 5.0, "contrast_hu": 10.0, "dice": 0.1},
                                          "10mm": {"diameter_mm": 10.0, "contrast_hu": 620.0, "dice": 0.7},
                                          "30mm": {"diameter_mm": 30.0, "contrast_hu": 480.0, "dice": 0.65}}}}}
    got = {t["target"].split(":")[0]: t for t in quality.targets(doc)}
    assert got["anomaly image AUROC"]["met"] and not got["anomaly voxel AUROC in the host organ"]["met"]
    # 5 mm lies outside the 10-30 mm the targets cover; the smallest contrast in it decides
    assert got["lesion lung nodule contrast over the lung around it"]["measured"] == 480.0
    assert not got["lesion lung nodule contrast over the lung around it"]["met"]
    assert got["lesion Dice of the thresholded lesion vs its mask"]["measured"] == 0.65


def test_quick_run_writes_the_targets(quality, tiny_models, tmp_path, capsys):
    assert quality.main(["--quick", "--out", str(tmp_path), "--model", tiny_models["base"],
                         "--lesion-controlnet", tiny_models["lesion"], "--superres-controlnet", tiny_models["superres"]]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "quick" / "quality.json").read_text())
    assert printed == saved
    assert saved["plan"]["regions"] == ["abdomen"]
    assert saved["models"]["base"]["working_spacing"] == [4.0, 4.0, 4.0]
    noise = saved["denoise"]["abdomen"]["dose_0.25"]["noise_hu_per_scan"]
    assert len(noise) == 1 and noise[0] > 5.0  # measured on the scan, not assumed
    targets = saved["targets"]
    names = [t["target"] for t in targets]
    for prefix in ("denoise PSNR over BM4D", "denoise SSIM over BM4D", "anomaly image AUROC", "anomaly voxel AUROC",
                   "lesion liver lesion", "lesion Dice", "superres PSNR over B-spline", "synthesize every organ",
                   "synthesize seam ratio", "inpaint outside the mask", "inpaint filled mean", "inpaint filled SD"):
        assert sum(n.startswith(prefix) for n in names) == 1, (prefix, names)
    for t in targets:
        assert set(t) >= {"target", "measured", "threshold", "comparison", "met"}
        assert isinstance(t["met"], bool)
    assert next(t for t in targets if t["target"].startswith("inpaint outside"))["met"] is True
    assert saved["targets_met"] == f"{sum(t['met'] for t in targets)} of {len(targets)}"
    (superres,) = saved["superres"].values()
    assert superres["abdomen"]["issue_setting_note"].startswith("issue 12's 5 mm -> 1 mm as 8 mm -> 4 mm")
    # the scans' own noise is checked against the issue's 20-35 HU at a quarter dose, apart from the targets
    (check,) = saved["protocol_checks"]
    assert check["measured"] == saved["denoise"]["abdomen"]["dose_0.25"]["noise_hu_in_soft_tissue"]
    assert check["met"] == (20.0 <= check["measured"] <= 35.0)
    table = _load("table").rows(saved)
    assert any(line.startswith("| quarter-dose soft-tissue noise: abdomen") for line in table)
    assert "| target | measured | threshold | met |" in table
    assert sum(line.startswith("| denoise PSNR over BM4D") for line in table) == 1


def test_field_of_view_comes_from_the_training_config(quality):
    from MedDiffFMLogic.modelfiles import ModelCard

    card = ModelCard(name="m", kind="base", architecture={}, weights="m.safetensors", sha256="0", provenance={
        "config": {"data": {"phantoms": {"size": [224, 224, 96], "spacing": [1.5, 1.5, 1.5], "patient_scale": 1.0}}}})
    assert quality.training_fov_mm(card) == (336.0, 336.0) and card.training_phantoms["patient_scale"] == 1.0
    card = dataclasses.replace(card, provenance={})
    assert quality.training_fov_mm(card) == quality.DEFAULT_FOV_MM and card.training_phantoms == {}


def test_merge_replaces_only_the_regions_rerun(quality, tmp_path):
    def doc(region, auroc, command):
        return {"command": command, "models": {"base": "m"}, "seconds": {"anomaly": 1.0},
                "anomaly": {region: {"scans_with_lesions": 20, "scans_without": 20, "image_auroc": auroc,
                                     "voxel_auroc_in_host_organ": 0.95}}}

    quality._write(tmp_path, doc("chest", 0.5, "all"), merge=False)
    quality._write(tmp_path, doc("abdomen", 0.7, "--regions abdomen"), merge=True)
    merged = json.loads(quality._write(tmp_path, doc("chest", 0.95, "--regions chest"), merge=True))
    assert merged["anomaly"]["abdomen"]["image_auroc"] == 0.7 and merged["anomaly"]["chest"]["image_auroc"] == 0.95
    met = {t["target"]: t["met"] for t in merged["targets"] if "image AUROC" in t["target"]}
    assert met == {"anomaly image AUROC: chest (20 + 20 scans)": True, "anomaly image AUROC: abdomen (20 + 20 scans)": False}
    assert merged["commands"] == ["all", "--regions abdomen", "--regions chest"]


def test_phantom_keeps_the_signature_speed_tasks_uses(quality):
    # benchmarks/speed_tasks.py draws its inputs with quality.phantom(region, seed, size, spacing, ...)
    a = quality.phantom("chest", 10001, [24, 24, 8], (8.0, 8.0, 4.0), lesions=1, radius=(8.0, 12.0))
    assert a.image.GetSize() == (24, 24, 8) and a.image.GetSpacing() == (8.0, 8.0, 4.0)
    assert quality.phantom("chest", 10001, (24, 24, 8), [8, 8, 4], lesions=1, radius=[8, 12]) is a  # kept, not redrawn


def test_a_refused_scan_is_measured_as_the_noisy_input(quality, tiny_models, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise quality.InputError("could not estimate the noise level")

    monkeypatch.setattr(quality.denoise, "denoise_image", refuse)
    assert quality.main(["--quick", "--tasks", "denoise", "--out", str(tmp_path), "--model", tiny_models["base"],
                         "--lesion-controlnet", tiny_models["lesion"], "--superres-controlnet", tiny_models["superres"]]) == 0
    r = json.loads(capsys.readouterr().out)["denoise"]["abdomen"]["dose_0.25"]
    assert len(r["meddifffm_failures"]) == 1 and r["methods"]["meddifffm"]["psnr"] == r["methods"]["noisy"]["psnr"]
