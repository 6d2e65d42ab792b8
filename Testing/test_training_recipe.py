"""The GPU recipe (`meddifffm train-recipe`): its dry run on the CPU trains the three models one after
the other into the folder it is given, under the bundled models' names, the ControlNets on the base
it has just trained; run again, it resumes each run instead of starting over."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from MedDiffFMLogic.cli import main
from MedDiffFMLogic.modelfiles import load_controlnet, load_network, read_card
from MedDiffFMLogic.tasks.common import DEFAULT_LESION, DEFAULT_MODEL, DEFAULT_SUPERRES
from MedDiffFMLogic.training.commands import CONFIG_DIR
from MedDiffFMLogic.training.config import load_config
from MedDiffFMLogic.training.recipe import RECIPE


def test_gpu_recipe_configs_are_the_cpu_scale_settings_at_a_larger_batch():
    """The GPU recipe trains the same three models as the CPU-scale run: the same network, phantoms (seeds
    included), working grid and task data (slab factor, lesion crops), only faster, at a larger batch."""
    for name in RECIPE:
        gpu, cpu = load_config(CONFIG_DIR / f"{name}.json"), load_config(CONFIG_DIR / f"cpu-{name[4:]}.json")
        assert gpu.name == cpu.name and gpu.task == cpu.task and gpu.seed == cpu.seed
        # the sampling window is how the model is run, not how it trains
        assert dataclasses.replace(gpu.network, sampling_window=None) == dataclasses.replace(cpu.network, sampling_window=None)
        assert gpu.conditioning_channels == cpu.conditioning_channels
        assert gpu.data.cache_dir is None  # the recipe puts the cache in its folder
        assert gpu.data == dataclasses.replace(cpu.data, cache_dir=None)  # phantoms, spacing, task fields
        assert gpu.batch_size * gpu.accumulation >= 8 * cpu.batch_size * cpu.accumulation
        assert cpu.lr <= gpu.lr <= cpu.lr * (gpu.batch_size / cpu.batch_size) ** 0.5 + 1e-12  # at most sqrt scaling
        assert gpu.mixed_precision == "auto" and gpu.num_workers > 0
    base = load_config(CONFIG_DIR / "gpu-base.json")
    assert base.network.default_window == 64 and base.network.window_size == 32


def test_dry_run_trains_the_three_models_into_the_folder(tmp_path, capsys):
    out = tmp_path / "models"
    assert main(["train-recipe", "-o", str(out), "--dry-run", "--device", "cpu", "--progress", "json"]) == 0
    done = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cards = {k: Path(v) for k, v in done["outputs"].items()}
    assert set(cards) == {"base", "superres", "lesion"}
    assert cards["base"] == out / DEFAULT_MODEL / f"{DEFAULT_MODEL}.json"
    assert cards["superres"].parent == out / DEFAULT_SUPERRES and cards["lesion"].parent == out / DEFAULT_LESION
    base, base_card = load_network(cards["base"])
    for task in ("superres", "lesion"):
        _, card = load_controlnet(cards[task], base, base_card)  # made for this very base
        assert card.provenance["base_model_sha256"] == base_card.sha256 and card.control["task"] == task
    assert read_card(cards["base"]).provenance["optimizer_steps"] == 2
    # the wall times a GPU session corrects the step counts by
    (first,) = json.loads((out / "recipe.json").read_text())["runs"]
    assert set(first["models"]) == {DEFAULT_MODEL, DEFAULT_SUPERRES, DEFAULT_LESION} and first["dry_run"]
    assert all(m["wall_seconds"] > 0 and m["training_seconds"] is not None for m in first["models"].values())
    assert first["models"][DEFAULT_MODEL]["settings"]["device"] == "cpu"
    # run again: every run resumes from its checkpoint (nothing is trained twice, no folder is refused)
    assert main(["train-recipe", "-o", str(out), "--dry-run", "--device", "cpu", "--progress", "none"]) == 0
    rows = (out / "runs" / DEFAULT_MODEL / "losses.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert len(json.loads((out / "recipe.json").read_text())["runs"]) == 2  # the first invocation's times stay
