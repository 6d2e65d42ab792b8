"""benchmarks/train_speed.py runs the old and the new training step side by side on the same phantoms
and reports what each used; the old step is the earlier setting (one thread, contiguous, eager, fp32,
samples built in the step) and the new one takes every core, channels-last and a data worker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def train_speed(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import train_speed

    yield train_speed
    sys.modules.pop("train_speed", None)


def test_old_and_new_steps_side_by_side(train_speed, tmp_path):
    result = train_speed.main(["--quick", "--network", "tiny", "--volumes", "1", "--phantom-size", "40,40,32",
                               "--cache", str(tmp_path)])
    old, new = result["variants"]["old"], result["variants"]["new"]
    assert old["settings"] == {"device": "cpu", "threads": 1, "precision": "fp32 (asked for)",
                               "channels_last": False, "compile": False, "data_workers": 0}
    cores = train_speed.CORES
    assert new["settings"]["threads"] == cores and new["settings"]["channels_last"]
    assert new["settings"]["data_workers"] == 1
    for v in (old, new):
        assert v["timed_steps"] == 1 and v["samples_per_second"] > 0
        assert len(v["losses_first_steps"]) == 3
    # the same samples, noise and initial weights: the first step's loss is the same to rounding
    assert new["losses_first_steps"][0] == pytest.approx(old["losses_first_steps"][0], abs=1e-3)
    assert result["speedup_over_old"]["old"] == 1.0
    assert result["setting"]["batch"] == 4 and result["setting"]["window"] == 32
    assert not (tmp_path / "train_speed.json").exists()  # --quick writes no result file
    assert torch.get_num_threads() >= 1
