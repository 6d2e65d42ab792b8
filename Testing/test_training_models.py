"""The bundled demonstration models: present, sha256-verified through the catalogue, honest cards, the
committed config and command that made each, a loss curve beside each, within 40 MB together.

They are the CPU-scale models (configs cpu-*): each config's `steps` is a budget, and the run was stopped
at the step count its command gives with `--steps` (the learning rate is constant, so the budget does not
change the trajectory)."""

import json
from pathlib import Path

import pytest
import torch

from MedDiffFMLogic.modelfiles import BUNDLED_DIR, find_model, list_models, load_controlnet, load_network, read_card
from MedDiffFMLogic.tasks.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES
from MedDiffFMLogic.training.commands import CONFIG_DIR
from MedDiffFMLogic.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
NAMES = {DEFAULT_MODEL: "cpu-base", DEFAULT_SUPERRES: "cpu-superres", DEFAULT_LESION: "cpu-lesion"}


def test_bundled_models_are_small_enough():
    total = sum(p.stat().st_size for p in BUNDLED_DIR.rglob("*") if p.is_file())
    assert total <= 40 * 2**20, total


@pytest.mark.parametrize("name", NAMES)
def test_bundled_model_card_is_honest_and_reproducible(name):
    entry = next(e for e in list_models() if e.name == name)
    assert entry.source in ("bundled", "user", "MEDDIFFFM_MODELS")
    card_path = BUNDLED_DIR / name / f"{name}.json"
    card = read_card(card_path)
    assert "not for clinical use" in card.intended_use.lower()
    assert "procedural" in card.provenance["trained_on"] and "no real CT" in card.provenance["trained_on"]
    assert (card_path.parent / "loss_curve.png").stat().st_size > 1000
    # the committed config file is the one the card records, and the command names it
    config_file = CONFIG_DIR / f"{NAMES[name]}.json"
    assert card.provenance["config_file"] == f"MedDiffFMLogic/training/configs/{NAMES[name]}.json"
    command = card.provenance["command"].split()
    assert command[command.index("--config") + 1] == NAMES[name]
    assert f"--export MedDiffFMLogic/models/{name}" in card.provenance["command"]
    committed = load_config(config_file)
    recorded = card.provenance["config"]
    for key in ("lr", "batch_size", "accumulation", "seed", "condition_dropout", "ema_decay"):
        assert recorded[key] == getattr(committed, key), key
    steps = card.provenance["optimizer_steps"]
    assert recorded["steps"] == steps <= committed.steps and command[command.index("--steps") + 1] == str(steps)
    assert recorded["data"]["phantoms"]["seeds"][1] <= 10000  # never the held-out benchmark seeds
    assert tuple(card.working_spacing) == committed.data.spacing


def test_bundled_models_load_with_their_sha256_checked():
    base, base_card = load_network(find_model(DEFAULT_MODEL))
    assert base_card.kind == "base"
    for name, task in ((DEFAULT_SUPERRES, "superres"), (DEFAULT_LESION, "lesion")):
        control, card = load_controlnet(find_model(name), base, base_card)
        assert card.control["task"] == task and card.base_model == DEFAULT_MODEL
        assert card.provenance["base_model_sha256"] == base_card.sha256
        # fine-tuning moved the zero-initialised output convolutions
        zero_convs = [p for n, p in control.named_parameters() if "controlnet_down_blocks" in n or "controlnet_mid_block" in n]
        assert any(p.abs().sum() > 0 for p in zero_convs)
    x = torch.zeros(1, 1, 32, 32, 32)
    with torch.no_grad():
        assert torch.isfinite(base(x, torch.tensor([500]), region=1)).all()
