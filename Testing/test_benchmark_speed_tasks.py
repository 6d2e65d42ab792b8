"""The task speed benchmark's two estimators (benchmarks/speed_tasks.py): the MONAI drop-in computes
what ours computes once both use MONAI's weight map (position crop, anatomy and a ControlNet's control
volume included), and the counting wrapper counts voxel-steps and windows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def speed_tasks(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import speed_tasks

    speed_tasks.CALLS.clear()
    speed_tasks.FIRST.clear()
    yield speed_tasks
    speed_tasks.CALLS.clear()
    speed_tasks.FIRST.clear()
    sys.modules.pop("speed_tasks", None)


def _tiny(control: bool):
    from MedDiffFMLogic.controlnet import ControlledDenoiser, ControlNetConfig, MedDiffFMControlNet
    from MedDiffFMLogic.network import PRESETS, MedDiffFMNet

    torch.manual_seed(0)
    net = MedDiffFMNet(PRESETS["tiny"]).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)
    if not control:
        return net
    controlnet = MedDiffFMControlNet(net.config, ControlNetConfig(task="lesion"))
    with torch.no_grad():
        for p in controlnet.parameters():
            p.normal_(0.0, 0.05)
    return ControlledDenoiser(net, controlnet.eval()).eval()


@pytest.mark.parametrize("control", [False, True])
def test_monai_drop_in_matches_ours_with_monais_weights(speed_tasks, control):
    from MedDiffFMLogic.sampling import Conditions, SlidingWindowEstimator, WindowConfig

    torch.set_num_threads(1)
    shape = (20, 28, 24)
    g = torch.Generator().manual_seed(1)
    axes = tuple(torch.linspace(-1.0, 1.0, n + 10)[3 : 3 + n] for n in shape)  # a crop of a larger frame
    conditions = Conditions(
        region=1, axes=axes, anatomy=torch.randint(0, 100, shape, generator=g),
        control=torch.randn((1, *shape), generator=g) if control else None,
    )
    windows = WindowConfig(size=16)
    net = _tiny(control)
    x = torch.randn((1, 1, *shape), generator=g)
    ours = speed_tasks.counting(SlidingWindowEstimator)(net, shape, conditions, windows)
    ours(x, 700)
    monai = speed_tasks.counting(speed_tasks.MonaiSlidingWindow)(net, shape, conditions, windows, "cpu", torch.float32,
                                                                 alphas_cumprod=None)
    baseline = monai(x, 700)
    assert len(monai) == len(ours) == 8 and monai.active_windows == 8
    same = speed_tasks.estimate_with_monai_weights()
    assert float((same - baseline).abs().max()) < speed_tasks.ESTIMATE_TOLERANCE
    # As run, only the weight maps differ: the same order of magnitude, not the same numbers.
    assert float((speed_tasks.FIRST["eps"] - baseline).abs().max()) > speed_tasks.ESTIMATE_TOLERANCE
    assert [c["voxels"] for c in speed_tasks.CALLS] == [20 * 28 * 24] * 2
    assert [(c["windows"], c["evaluated"]) for c in speed_tasks.CALLS] == [(8, 8)] * 2
