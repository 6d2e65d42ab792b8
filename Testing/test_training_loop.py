"""The training loop on tiny phantoms: the loss falls, a resumed run repeats the uninterrupted one
exactly, a fresh ControlNet leaves the base model's output unchanged and fine-tuning changes it, the
exported model loads through the catalogue, and the train/finetune commands work and fail cleanly."""

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from MedDiffFMLogic.cli import main
from MedDiffFMLogic.modelfiles import load_controlnet, load_network, read_card, sha256_of
from MedDiffFMLogic.training.commands import CONFIG_DIR
from MedDiffFMLogic.training.config import load_config
from MedDiffFMLogic.training.data import collate
from MedDiffFMLogic.training.trainer import Trainer

TINY = CONFIG_DIR / "tiny.json"


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("training-cache"))


def _config(cache, **overrides):
    return load_config(TINY, **{"data.cache_dir": cache, **overrides})


def _losses(folder: Path) -> list[tuple[str, str]]:
    rows = list(csv.DictReader((folder / "losses.csv").read_text().splitlines()))
    return [(r["step"], r["loss"]) for r in rows]


def test_pretraining_steps_lower_the_loss(tmp_path, cache):
    trainer = Trainer(_config(cache, steps=6, lr=3e-3), tmp_path / "run", device="cpu").setup()
    before = trainer.validation_loss(use_ema=False)
    trainer.run()
    after = trainer.validation_loss(use_ema=False)
    assert after < before - 0.02, (before, after)
    # an untrained network predicts zero noise: the L1 loss starts near E|eps| = sqrt(2/pi)
    assert abs(before - (2 / torch.pi) ** 0.5) < 0.05
    validation = list(csv.DictReader((tmp_path / "run" / "validation.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in validation] == [0, 2, 4, 6]  # the starting point, then every 2 steps
    assert float(validation[0]["val_loss"]) == pytest.approx(before, abs=1e-6)
    card = read_card(tmp_path / "run" / "model" / "meddifffm-tiny-test.json")
    assert card.kind == "base" and card.provenance["optimizer_steps"] == 6
    assert "procedural CT phantoms" in card.provenance["trained_on"] and "not for clinical use" in card.intended_use
    assert (tmp_path / "run" / "model" / "loss_curve.png").stat().st_size > 1000
    net, _ = load_network(tmp_path / "run" / "model" / "meddifffm-tiny-test.json")  # sha256-checked
    ema = trainer.ema_trainable.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in net.state_dict().items())


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path, cache):
    straight = tmp_path / "straight"
    # DataLoader workers build the same sample stream as the inline path
    Trainer(_config(cache, steps=4, num_workers=1), straight, device="cpu").run()
    split = tmp_path / "split"
    Trainer(_config(cache, steps=2), split, device="cpu").run()
    # a stray row written after the checkpoint (a crash before the next one) must not survive the resume
    with open(split / "losses.csv", "a") as f:
        f.write("3,9.9,0,0,0\n")
    resumed = Trainer(_config(cache, steps=4), split, device="cpu")
    resumed.run(resume=True)
    assert resumed.step == 4
    assert _losses(split) == _losses(straight) and len(_losses(straight)) == 4
    assert sha256_of(split / "model" / "meddifffm-tiny-test.safetensors") == sha256_of(
        straight / "model" / "meddifffm-tiny-test.safetensors"
    )
    checkpoints = sorted(p.name for p in (split / "checkpoints").iterdir())
    assert checkpoints == ["step-000002", "step-000004"]
    assert not list((split / "checkpoints").rglob("*.pt")) and not list((split / "checkpoints").rglob("*.pkl"))
    with pytest.raises(Exception, match="config changed in lr"):
        Trainer(_config(cache, steps=6, lr=1e-2), split, device="cpu").run(resume=True)


def test_a_checkpoint_from_before_a_new_config_field_still_resumes(tmp_path, cache):
    # a long run spans sessions and code changes: a field added since (here the network's
    # sampling_window and the phantoms' contrast) reads as its default, not as a changed trajectory
    run = tmp_path / "run"
    Trainer(_config(cache, steps=1), run, device="cpu").run()
    state_file = next((run / "checkpoints").iterdir()) / "state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["network"]["sampling_window"]
    del state["config"]["data"]["phantoms"]["contrast"]
    state_file.write_text(json.dumps(state))
    resumed = Trainer(_config(cache, steps=2), run, device="cpu")
    resumed.run(resume=True)
    assert resumed.step == 2


def test_a_run_may_take_up_a_sampling_window_between_sessions(tmp_path, cache):
    # the sampling window is used only when sampling: a resume accepts it, and the export carries it
    run = tmp_path / "run"
    Trainer(_config(cache, steps=1), run, device="cpu").run()
    config = _config(cache, steps=2)
    config = dataclasses.replace(config, network=dataclasses.replace(config.network, sampling_window=64))
    resumed = Trainer(config, run, device="cpu")
    resumed.run(resume=True)
    assert resumed.step == 2
    assert read_card(run / "model" / "meddifffm-tiny-test.json").architecture["sampling_window"] == 64


def test_fresh_controlnet_leaves_the_base_unchanged_and_finetuning_changes_it(tmp_path, cache, tiny_model_card):
    config = _config(cache, task="lesion", base_model=str(tiny_model_card), steps=3, name="tiny-lesion")
    trainer = Trainer(config, tmp_path / "ft", device="cpu").setup()
    assert not any(p.requires_grad for p in trainer.model.base.parameters())
    batch = collate([trainer.data.sample(g)[0] for g in range(2)])
    t = torch.tensor([10, 600])
    noisy = torch.randn(batch.image.shape, generator=torch.Generator().manual_seed(0))

    def outputs():
        with torch.no_grad():
            base = trainer.model.base(noisy, t, region=batch.region, anatomy=batch.anatomy, coords=batch.coords)
            full = trainer.model(noisy, t, region=batch.region, anatomy=batch.anatomy, coords=batch.coords,
                                 control=batch.control)
        return base, full

    base, full = outputs()
    assert base.abs().sum() > 0 and torch.equal(base, full)
    frozen = {k: v.clone() for k, v in trainer.model.base.state_dict().items()}
    outputs_ = trainer.run()
    base_after, full_after = outputs()
    assert torch.equal(base_after, base)  # the base stays frozen
    assert all(torch.equal(v, frozen[k]) for k, v in trainer.model.base.state_dict().items())
    assert not torch.allclose(full_after, base, atol=1e-6)
    card = read_card(outputs_["model"])
    assert card.kind == "controlnet" and card.control["task"] == "lesion" and card.base_model == "tiny-test"
    net, base_card = load_network(tiny_model_card)
    control, _ = load_controlnet(outputs_["model"], net, base_card)
    assert all(torch.equal(v, trainer.ema_trainable.state_dict()[k]) for k, v in control.state_dict().items())


def test_superres_finetuning_uses_the_low_resolution_control(tmp_path, cache, tiny_model_card):
    config = _config(cache, task="superres", base_model=str(tiny_model_card), steps=1, name="tiny-sr")
    trainer = Trainer(config, tmp_path / "sr", device="cpu").setup()
    sample, _ = trainer.data.sample(0)
    assert sample.control.shape == sample.image.shape
    assert not torch.equal(sample.control, sample.image)  # slab-averaged along z
    assert (sample.control - sample.image).abs().mean() < 0.2
    card = read_card(trainer.run()["model"])
    assert card.control["task"] == "superres"


def test_train_and_finetune_commands(tmp_path, cache, tiny_model_card, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--config", "tiny", "--output", str(out), "--steps", "1", "--cache-dir", cache,
               "--seed", "3", "--progress", "json"])
    assert rc == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines[-1]["stage"] == "done" and Path(lines[-1]["outputs"]["model"]).is_file()
    card = read_card(lines[-1]["outputs"]["model"])
    assert card.provenance["command"].startswith("meddifffm ") and card.provenance["config"]["steps"] == 1
    assert card.provenance["config"]["seed"] == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**json.loads(TINY.read_text()), "learning_rate": 1}))
    assert main(["train", "--config", str(bad), "--output", str(tmp_path / "x")]) == 1
    assert "unknown config keys: learning_rate" in capsys.readouterr().err
    lesion = tmp_path / "lesion.json"
    lesion.write_text(json.dumps({**json.loads(TINY.read_text()), "task": "lesion", "base_model": "x",
                                  "name": "tiny-lesion"}))
    assert main(["finetune", "--task", "lesion", "--base", "no-such-model", "--config", str(lesion),
                 "--output", str(tmp_path / "y"), "--cache-dir", cache]) == 1
    assert "no model named 'no-such-model'" in capsys.readouterr().err
    assert main(["train", "--config", "no-such-config"]) == 1
