"""The GPU timing script runs end to end (tiny model, small volumes, CPU), so it works when a session
with a GPU comes to use it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_dry_run_times_both_tasks(capsys):
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "benchmarks" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--dry-run", "--precisions", "fp32", "--denoise-steps", "2", "--synthesis-steps", "3"])
    report = json.loads(capsys.readouterr().out)
    runs = {run["task"]: run for run in report["runs"]}
    assert set(runs) == {"denoise", "synthesize"}
    assert runs["denoise"]["steps"] == 2 and runs["synthesize"]["steps"] == 3
    for run in runs.values():
        assert run["seconds"] >= run["sampling_s"] > 0
        assert run["first_step_s"] > 0 and run["other_steps_mean_s"] > 0
