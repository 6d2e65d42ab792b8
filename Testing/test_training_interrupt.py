"""Training survives interruption and never loses work: SIGTERM or Ctrl+C saves a checkpoint at the
step reached and a resumed run repeats the uninterrupted one (with a data worker too); checkpoints are
also written by wall-clock time; a damaged newest checkpoint falls back to the one before; a run folder
that holds a run is not started over silently; the bundled models are written only when named; a
ControlNet is named apart from its base and trained from a ControlNet config."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest

from MedDiffFMLogic.cli import main
from MedDiffFMLogic.errors import InputError, Interrupted
from MedDiffFMLogic.modelfiles import BUNDLED_DIR, sha256_of
from MedDiffFMLogic.training.commands import CONFIG_DIR
from MedDiffFMLogic.training.config import load_config
from MedDiffFMLogic.training.stepping import StopSignals
from MedDiffFMLogic.training.trainer import Trainer

TINY = CONFIG_DIR / "tiny.json"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("training-cache"))


def _config_file(tmp_path: Path, **fields) -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.json"
    path.write_text(json.dumps({**json.loads(TINY.read_text()), **fields}))
    return path


def _losses(folder: Path) -> list[tuple[str, str]]:
    rows = list(csv.DictReader((folder / "losses.csv").read_text().splitlines()))
    return [(r["step"], r["loss"]) for r in rows]


def _checkpoints(folder: Path) -> list[str]:
    return sorted(p.name for p in (folder / "checkpoints").iterdir())


def test_sigterm_saves_a_checkpoint_and_resume_repeats_the_run(tmp_path, cache, monkeypatch, capsys):
    config = _config_file(tmp_path, steps=5, checkpoint_every=2, num_workers=1)
    common = ["--config", str(config), "--cache-dir", cache, "--progress", "json"]
    assert main(["train", *common, "--output", str(tmp_path / "straight")]) == 0

    original = Trainer.train_step

    def step_then_signal(self, loaded=None):
        out = original(self, loaded)
        if self.step == 3:  # `kill` arrives during step 4's data loading, say: step 3 is complete
            signal.raise_signal(signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    run = tmp_path / "run"
    assert main(["train", *common, "--output", str(run)]) == 128 + signal.SIGTERM
    out = capsys.readouterr().out
    assert "stopped by SIGTERM at step 3" in out and "--resume" in out
    assert _checkpoints(run) == ["step-000002", "step-000003"]  # step 3 is not on the 2-step schedule
    assert [s for s, _ in _losses(run)] == ["1", "2", "3"]
    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(["train", *common, "--output", str(run), "--resume"]) == 0
    assert _losses(run) == _losses(tmp_path / "straight")
    name = "meddifffm-tiny-test.safetensors"
    assert sha256_of(run / "model" / name) == sha256_of(tmp_path / "straight" / "model" / name)


def test_checkpoints_by_wall_clock_time(tmp_path, cache):
    config = load_config(TINY, **{"data.cache_dir": cache, "steps": 3, "checkpoint_every": 100,
                                  "checkpoint_minutes": 1e-9, "keep_checkpoints": 5})
    Trainer(config, tmp_path / "run", device="cpu").run()
    assert _checkpoints(tmp_path / "run") == ["step-000001", "step-000002", "step-000003"]
    with pytest.raises(InputError, match="checkpoint_minutes"):
        load_config(TINY, checkpoint_minutes=-1)


def test_a_second_signal_stops_at_once():
    # What the handler was before: Python's default, or SIG_IGN when the tests run as a background job
    # of a non-interactive shell (which ignores SIGINT for its children).
    before = signal.getsignal(signal.SIGINT)
    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signal.SIGINT  # the first only asks the loop to stop after its step
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_resume_skips_a_damaged_newest_checkpoint_and_a_cut_log_row(tmp_path, cache):
    straight, split = tmp_path / "straight", tmp_path / "split"
    Trainer(load_config(TINY, **{"data.cache_dir": cache, "steps": 4}), straight, device="cpu").run()
    Trainer(load_config(TINY, **{"data.cache_dir": cache, "steps": 4, "keep_checkpoints": 3}), split,
            device="cpu").run()
    # a power cut: the newest checkpoint's weights cut short, and a half-written log row
    weights = split / "checkpoints" / "step-000004" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with open(split / "losses.csv", "a") as f:
        f.write("5,0.1")
    resumed = Trainer(load_config(TINY, **{"data.cache_dir": cache, "steps": 4, "keep_checkpoints": 3}), split,
                      device="cpu")
    with pytest.warns(UserWarning, match="step-000004 is unreadable"):
        resumed.run(resume=True)
    assert resumed.step == 4
    assert _losses(split) == _losses(straight)


def test_a_folder_holding_a_run_is_not_started_over_silently(tmp_path, cache, capsys):
    out = tmp_path / "run"
    args = ["train", "--config", "tiny", "--output", str(out), "--steps", "2", "--cache-dir", cache]
    assert main(args) == 0
    first = _losses(out)
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "already holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert _losses(out) == first  # nothing was touched
    assert main([*args, "--resume", "--overwrite"]) == 1
    assert "contradict" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert _losses(out) == first  # started over: steps 1-2 once, not twice
    assert _checkpoints(out) == ["step-000002"]
    assert main([*args[:-4], "--steps", "3", "--cache-dir", cache, "--resume"]) == 0
    assert [s for s, _ in _losses(out)] == ["1", "2", "3"]


def test_the_bundled_models_folder_is_written_only_when_named(tmp_path):
    config = load_config(TINY, **{"data.cache_dir": str(tmp_path / "cache")})
    with pytest.raises(InputError, match="bundled models folder"):
        Trainer(config, BUNDLED_DIR / "runs" / "x").check_folders()
    with pytest.raises(InputError, match="bundled models folder"):
        Trainer(config, tmp_path / "run", export_dir=BUNDLED_DIR / "meddifffm-base-demo").check_folders()
    bad_cache = load_config(TINY, **{"data.cache_dir": str(BUNDLED_DIR / "cache")})
    with pytest.raises(InputError, match="cache folder"):
        Trainer(bad_cache, tmp_path / "run").check_folders()
    # asked for by name: the export folder is the bundled folder of this very model
    assert Trainer(config, tmp_path / "run", export_dir=BUNDLED_DIR / config.name).check_folders() == []


def test_a_controlnet_is_named_apart_from_its_base(tmp_path, cache, tiny_model_card, capsys):
    common = ["--base", str(tiny_model_card), "--cache-dir", cache, "--steps", "1"]
    # a base model's config is refused for a ControlNet
    assert main(["finetune", "--task", "lesion", "--config", "tiny", "--output", str(tmp_path / "a"), *common]) == 1
    assert "is a pretraining config" in capsys.readouterr().err
    lesion = _config_file(tmp_path, task="lesion", base_model="x", name="tiny-lesion")
    assert main(["finetune", "--task", "superres", "--config", str(lesion), "--output", str(tmp_path / "b"), *common]) == 1
    assert "is a 'lesion' ControlNet config" in capsys.readouterr().err
    # a ControlNet config that takes its base model's name
    clash = _config_file(tmp_path, task="lesion", base_model="x", name="tiny-test")
    assert main(["finetune", "--task", "lesion", "--config", str(clash), "--output", str(tmp_path / "c"), *common]) == 1
    assert "the name of its base model" in capsys.readouterr().err
    rc = main(["finetune", "--task", "lesion", "--config", str(clash), "--name", "tiny-test-lesion",
               "--output", str(tmp_path / "d"), "--progress", "json", *common])
    assert rc == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    card = json.loads(Path(done["outputs"]["model"]).read_text())
    assert card["name"] == "tiny-test-lesion" and card["base_model"] == "tiny-test"
