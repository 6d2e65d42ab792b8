"""The learning-curve benchmark: one point per exported model, merged into the curve by step, with the
run's validation loss at that step, and a plot of the curve."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY

from conftest import make_tiny_net

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_a_point_is_measured_merged_by_step_and_plotted(tmp_path):
    curve = _load("learning_curve")
    quality = sys.modules["quality"]
    card = save_model(make_tiny_net(), tmp_path, name="tiny-curve", kind="base", architecture=TINY.to_dict(),
                      working_spacing=(4.0, 4.0, 4.0), provenance={"optimizer_steps": 30, "samples_seen": 120})
    run = tmp_path / "run"
    run.mkdir()
    (run / "validation.csv").write_text("step,val_loss\n0,0.8\n20,0.3\n40,0.2\n")
    plan = replace(quality.QUICK, doses=(0.25, 0.1))
    point = curve.measure(str(card), run, anomaly_scans=1, device="cpu", log=lambda m: None, plan=plan)
    assert point["step"] == 30 and point["val_loss"] == 0.3  # the last validation at or before the step
    for dose in ("dose_0.25", "dose_0.1"):
        row = point["denoise"]["abdomen"][dose]
        assert row["noise_hu"] > 0 and set(row) == {"noise_hu", "noisy", "meddifffm", "bm4d"}
        assert all(0 < row[m]["ssim"] <= 1 for m in ("noisy", "meddifffm", "bm4d"))
    assert 0 <= point["anomaly"]["abdomen"]["image_auroc"] <= 1

    assert point["protocol"]["plan"]["anomaly_scans"] == 1  # what was measured, not the plan's default
    out = tmp_path / "curve.json"
    curve.merge(out, {**point, "step": 60})
    curve.merge(out, point)
    curve.merge(out, {**point, "model_sha256": "another model at the same step"})
    doc = curve.merge(out, {**point, "val_loss": 0.25})  # the same step and model again: replaced
    assert [p["step"] for p in doc["points"]] == [30, 30, 60]
    assert [p["val_loss"] for p in doc["points"] if p["model_sha256"] == point["model_sha256"]] == [0.25, 0.3]
    assert json.loads(out.read_text()) == doc
    with pytest.raises(SystemExit, match="another protocol"):
        curve.merge(out, {**point, "step": 90, "protocol": {"plan": "other"}})
    curve.plot(doc, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
