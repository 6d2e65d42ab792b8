"""The extension's packaging and what the module reads without the engine: the CMake lists ship every
module file, the dependencies installed on first Apply match the engine's, the model selector lists
the engine's models, and the engine arguments the module builds parse with the engine's own CLI."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MedDiffFM"
sys.path.insert(0, str(MODULE_DIR))

from MedDiffFMLib import deps, models  # noqa: E402
from MedDiffFMLib.tasks import SKIP_AIR_TASKS, TASKS, TaskParameters, engine_arguments, output_files  # noqa: E402


def _cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set"
    return [line.strip().replace("${MODULE_NAME}", "MedDiffFM") for line in match.group(1).splitlines() if line.strip()]


def test_the_module_cmake_lists_ship_every_script_and_resource():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    scripts = set(_cmake_list(text, "MODULE_PYTHON_SCRIPTS"))
    on_disk = {str(p.relative_to(MODULE_DIR)) for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts}
    assert scripts == on_disk
    resources = set(_cmake_list(text, "MODULE_PYTHON_RESOURCES"))
    assert resources == {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    top = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r'set\(EXTENSION_DEPENDS "PyTorch"\)', top)
    assert "add_subdirectory(MedDiffFM)" in top and "MedDiffFMLogic/*.py" in top
    for field in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL"):
        assert re.search(rf"set\(EXTENSION_{field} \"[^\"]+\"\)", top), field
    assert "set(EXTENSION_SCREENSHOTURLS" in top
    icon = re.search(r'set\(EXTENSION_ICONURL "[^"]*/main/([^"]+)"\)', top).group(1)
    assert (ROOT / icon).is_file()  # the icon the extension index shows is in the repository


def test_first_apply_installs_what_the_engine_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    engine = {deps.distribution_name(r).lower() for r in declared}
    module = {deps.distribution_name(r).lower() for r in deps.requirements()}
    assert engine - module == {"torch"}  # torch comes from the PyTorch extension instead
    assert module <= engine
    torch_missing, missing = deps.missing()
    assert not torch_missing and missing == []  # this venv has them all, found without importing them
    assert deps.import_name("scikit-image>=0.24") == "skimage" and deps.installed("skimage")
    assert not deps.installed("no_such_package_for_meddifffm")


def test_the_model_selector_lists_the_engines_models(tmp_path, tiny_model_card, monkeypatch):
    from MedDiffFMLogic.modelfiles import list_models

    monkeypatch.setenv("MEDDIFFFM_MODELS", str(Path(tiny_model_card).parent))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    cards = models.list_cards(ROOT)
    assert [(c.name, c.path, c.source) for c in cards] == \
        [(e.name, e.card_path, e.source) for e in list_models() if e.card is not None]
    tiny = next(c for c in cards if c.name == "tiny-test")
    text = models.card_html(tiny)
    assert "tiny-test" in text and "Licence" in text and "Intended use" in text
    assert models.NOT_CLINICAL in text  # the engine's demo cards say so, and the selector shows it
    assert "default" in models.card_html(None)


@pytest.mark.parametrize("task", list(TASKS))
def test_the_arguments_the_module_builds_parse_with_the_engines_cli(task, tmp_path):
    """Every panel's settings become flags the engine's own parser accepts, with the meaning intended."""
    from MedDiffFMLogic.cli import build_parser

    files = {"input": str(tmp_path / "in.nrrd"), "mask": str(tmp_path / "mask.nrrd"),
             "anatomy": str(tmp_path / "anatomy.nrrd"), **output_files(task, str(tmp_path))}
    if TASKS[task].segment is None:
        files.pop("mask")
    params = TaskParameters(region="abdomen", preset="fast", seed=7, steps=3, noise_level=12.5, strength=1.5,
                            threshold=40.0, inpaint_lesion=True, factor=4.0, synth_spacing=1.5, device="cpu",
                            precision="bf16", skip_air=True)
    args = build_parser().parse_args([task, *engine_arguments(task, params, files), "--progress", "json"])
    assert args.command == task and args.region == "abdomen" and args.seed == 7 and args.steps == 3
    assert args.precision == "bf16" and getattr(args, "skip_air", False) == (task in SKIP_AIR_TASKS)
    assert args.device == "cpu" and args.output == files["output"] and args.progress == "json"
    assert args.anatomy == files["anatomy"]
    if TASKS[task].needs_volume:
        assert args.input == files["input"]
    expected = {
        "denoise": lambda a: a.noise_level == 12.5 and a.strength == 1.5,
        "anomaly": lambda a: a.roi == files["mask"] and a.threshold == 40.0 and a.mask_out == files["mask-out"],
        "inpaint": lambda a: a.mask == files["mask"] and a.controlnet == "meddifffm-lesion-demo",
        "lesion": lambda a: a.mask == files["mask"],
        "superres": lambda a: a.factor == 4.0,
        "synthesize": lambda a: True,  # with an anatomy map its grid is the output grid: no --size
    }
    assert expected[task](args)
    if task == "synthesize":
        del files["anatomy"]
        plain = build_parser().parse_args([task, *engine_arguments(task, params, files)])
        assert plain.size == (64, 64, 64) and plain.spacing == (1.5, 1.5, 1.5) and plain.anatomy is None


def test_batch_options_reach_the_task_parameters():
    from MedDiffFMLib import batch

    args = batch.build_parser().parse_args(["--task", "denoise", "--input", "in", "--output", "out",
                                            "--precision", "bf16", "--skip-air"])
    params = batch.parameters(args)
    assert params.precision == "bf16" and params.skip_air
    plain = batch.parameters(batch.build_parser().parse_args(["--task", "denoise", "--output", "out"]))
    assert plain.precision == "fp32" and not plain.skip_air
    with pytest.raises(ValueError, match="unknown precision"):
        TaskParameters(precision="fp64").check("denoise")


def test_the_batch_script_gives_the_paths_where_it_really_lies():
    """Scripts/batch.py ships as a module script (MODULE_PYTHON_SCRIPTS), so Slicer installs it under the
    module's folder, qt-scripted-modules/Scripts/, beside MedDiffFMLib/; in a checkout it is
    <checkout>/MedDiffFM/Scripts/batch.py."""
    import ast

    scripts = _cmake_list((MODULE_DIR / "CMakeLists.txt").read_text(), "MODULE_PYTHON_SCRIPTS")
    assert "Scripts/batch.py" in scripts and "MedDiffFM.py" in scripts
    doc = ast.get_docstring(ast.parse((MODULE_DIR / "Scripts" / "batch.py").read_text()))
    assert "<checkout>/MedDiffFM/Scripts/batch.py" in doc
    assert "/lib/Slicer-<major>.<minor>/qt-scripted-modules/Scripts/batch.py" in doc
    assert "slicer.modules.meddifffm.path" in doc
    assert "<extension>/MedDiffFM/Scripts" not in doc
    # The script finds MedDiffFMLib one folder up from itself, which is where both layouts put it.
    assert "os.path.dirname(os.path.dirname(os.path.abspath(__file__)))" in (MODULE_DIR / "Scripts" / "batch.py").read_text()
    readme = (MODULE_DIR / "README.md").read_text()
    assert "qt-scripted-modules/Scripts/batch.py" in readme


def test_the_job_runner_has_its_own_name():
    import importlib.util

    assert importlib.util.find_spec("MedDiffFMLib.jobs") is not None
    assert importlib.util.find_spec("MedDiffFMLib.logic") is None  # a third "Logic" would confuse again
    module = (MODULE_DIR / "MedDiffFM.py").read_text()
    assert "from MedDiffFMLib.jobs import" in module and "MedDiffFMLib.logic" not in module
    assert "class MedDiffFMLogic(ScriptedLoadableModuleLogic)" in module  # Slicer's template name, kept


def _parameters(weights: Path) -> int:
    """Parameter count of a safetensors file, from its header (no torch)."""
    import json
    import math
    import struct

    with open(weights, "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    header.pop("__metadata__", None)
    return sum(math.prod(t["shape"]) for t in header.values())


def test_the_module_readme_describes_the_bundled_models_as_they_are():
    """Issue 15's contradictions: the module README's network size, window edge, windows per call and
    speed are those of the bundled models, their cards and the committed speed benchmark."""
    import json

    from MedDiffFMLogic.sampling import AUTO_BATCH_MAX

    readme = " ".join((MODULE_DIR / "README.md").read_text().split())
    models = ROOT / "MedDiffFMLogic" / "models"
    base = json.loads((models / "meddifffm-base-demo" / "meddifffm-base-demo.json").read_text())
    window = base["architecture"]["window_size"]
    assert f"{window}^3 windows" in readme and f"{window}^3 voxels for the bundled models" in readme
    assert f"at {base['working_spacing'][0]:g} mm" in readme
    assert f"{_parameters(models / 'meddifffm-base-demo' / 'meddifffm-base-demo.safetensors') / 1e6:.1f} M parameters" in readme
    for name in ("meddifffm-lesion-demo", "meddifffm-superres-demo"):
        assert f"each ControlNet adds {_parameters(models / name / f'{name}.safetensors') / 1e6:.1f} M" in readme
    assert f"up to {AUTO_BATCH_MAX} windows per call" in readme
    run = next(r for r in json.loads((ROOT / "benchmarks" / "results" / "speed_tasks.json").read_text())["tasks"]["runs"]
               if r["task"] == "denoise" and r["settings"]["steps"] == 1)
    assert f"({run['ours']['windows_per_step']} windows) takes about {round(run['ours']['seconds'])} s" in readme
    for stale in ("2.9M", "one window at a time"):
        assert stale not in readme
