"""The Slicer side reads the engine's setting declarations instead of mirroring them: the declarations
import without torch, MONAI or SimpleITK (Slicer's GUI process must never load them); the module's
library finds them wherever it finds the engine it runs (source checkout, installed extension) and
refuses a different copy; the panels' defaults, the presets' step counts and the batch script's options
are the engine's, and the help text of every setting the module passes is written once in the code."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MedDiffFM"
sys.path.insert(0, str(MODULE_DIR))

from MedDiffFMLib import batch, runner  # noqa: E402
from MedDiffFMLib.tasks import (  # noqa: E402
    ENGINE_SETTINGS, PRESET_SETTINGS, PRESETS, TASKS, TaskParameters, declaration, engine_arguments, engine_setting,
)

HEAVY = ("torch", "monai", "SimpleITK")


def _fresh_python(code: str, cwd: Path) -> dict:
    """Run `code` in a new interpreter (nothing imported yet) and return the JSON it prints last."""
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_declarations_and_the_library_import_without_torch_monai_or_simpleitk(tmp_path):
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        "import MedDiffFMLogic.settings.commands\n"
        "after_settings = [m for m in %r if m in sys.modules]\n"
        "from MedDiffFMLib import batch, jobs, panel, tasks\n"
        "print(json.dumps({'settings': after_settings, 'library': [m for m in %r if m in sys.modules],\n"
        "                  'tasks': len(tasks.TASKS)}))\n"
    ) % (HEAVY, HEAVY)
    seen = _fresh_python(code, tmp_path)
    assert seen == {"settings": [], "library": [], "tasks": len(TASKS)}


def _copy_engine(destination: Path) -> None:
    # The engine's Python files and cards; the weights are not needed to read declarations.
    shutil.copytree(ROOT / "MedDiffFMLogic", destination / "MedDiffFMLogic",
                    ignore=shutil.ignore_patterns("__pycache__", "*.safetensors", "*.png"))


def _copy_module(destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(MODULE_DIR / "MedDiffFM.py", destination)
    shutil.copytree(MODULE_DIR / "MedDiffFMLib", destination / "MedDiffFMLib",
                    ignore=shutil.ignore_patterns("__pycache__"))


@pytest.mark.parametrize("layout", ["checkout", "installed"])
def test_the_library_reads_the_declarations_of_the_engine_it_runs(tmp_path, layout):
    """Slicer puts the module's folder on sys.path, not the checkout: the library must import the
    declarations from the folder it starts the engine from (one level up in a checkout, beside the
    module in an installed extension), not from some other copy (here: this checkout's own, which the
    test's Python can import too)."""
    if layout == "checkout":
        module_dir, engine_dir = tmp_path / "checkout" / "MedDiffFM", tmp_path / "checkout"
    else:
        module_dir = engine_dir = tmp_path / "lib" / "Slicer-5.10" / "qt-scripted-modules"
    _copy_module(module_dir)
    _copy_engine(engine_dir)
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(module_dir)!r})\n"
        "from MedDiffFMLib import runner, tasks\n"
        "import importlib.util, MedDiffFMLogic\n"
        "print(json.dumps({'package': MedDiffFMLogic.__path__[0], 'root': str(runner.engine_root()),\n"
        "                  'module': importlib.util.find_spec('MedDiffFM').origin,\n"
        "                  'heavy': [m for m in %r if m in sys.modules]}))\n"
    ) % (HEAVY,)
    seen = _fresh_python(code, tmp_path)
    assert Path(seen["root"]) == engine_dir.resolve()
    assert Path(seen["package"]).resolve() == (engine_dir / "MedDiffFMLogic").resolve()
    assert seen["heavy"] == []
    # The checkout's root, now on sys.path, does not hide the module's own file (Scripts/batch.py imports it).
    assert Path(seen["module"]).resolve() == (module_dir / "MedDiffFM.py").resolve()


def test_another_copy_of_the_engine_imported_first_is_refused(tmp_path):
    """The runs start the engine of engine_root(); declarations read from another copy could differ."""
    _copy_engine(tmp_path / "other")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(tmp_path / 'other')!r})\n"
        "import MedDiffFMLogic\n"
        f"sys.path.insert(0, {str(MODULE_DIR)!r})\n"
        "from MedDiffFMLib import runner\n"
        "try:\n"
        "    from MedDiffFMLib import tasks\n"
        "    print(json.dumps({'error': None}))\n"
        "except runner.EngineError as exc:\n"
        "    print(json.dumps({'error': str(exc)}))\n"
    )
    error = _fresh_python(code, tmp_path)["error"]
    assert error and "shadows" in error and str(tmp_path / "other") in error and "pip uninstall" in error
    # The engine the module runs is still this checkout's.
    assert runner.engine_root() == ROOT


def test_the_panels_defaults_and_presets_are_the_engines():
    """Every task that declares a setting the panels share declares it alike, and the panels' default is
    that declaration's (the model's "" means the same: the engine's default)."""
    from MedDiffFMLogic.settings.common import PRESET_OVERLAP, STEPS

    defaults = TaskParameters()
    for name, (owners, config_field) in ENGINE_SETTINGS.items():
        assert owners, name
        first = declaration(owners[0], config_field)
        for task in owners:
            other = declaration(task, config_field)
            assert (other.default, other.choices, other.type) == (first.default, first.choices, first.type), (name, task)
        if name != "model":
            assert getattr(defaults, name) == first.default, name
    assert defaults.model == ""
    for preset in PRESETS:
        assert PRESET_SETTINGS[preset].overlap == PRESET_OVERLAP[preset]
        assert PRESET_SETTINGS[preset].steps == {task: STEPS[task][preset] for task in TASKS}
    # With every setting at its default, a run passes the engine's defaults or nothing at all.
    from MedDiffFMLogic.cli import build_parser

    for task in TASKS:
        files = {"input": "in.nrrd", "output": "out.nrrd", "mask": "mask.nrrd"}
        args = build_parser().parse_args([task, *engine_arguments(task, defaults, files)])
        config = {f: getattr(args, f) for f in ("region", "seed", "device", "noise_level", "strength", "threshold",
                                                  "factor", "spacing", "size") if hasattr(args, f)}
        for field_name, value in config.items():
            assert value == declaration(task, field_name).default, (task, field_name)


def _engine_option(command: str, flag: str):
    from MedDiffFMLogic.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    return next(a for a in sub._actions if flag in a.option_strings)


def test_the_batch_scripts_options_are_the_engines_declarations():
    parser = batch.build_parser()
    options = {a.dest: a for a in parser._actions}
    for name, (owners, config_field) in ENGINE_SETTINGS.items():
        setting, option = engine_setting(name), options[name]
        assert option.default == setting.default and option.choices == setting.choices, name
        assert option.help.endswith(setting.help), name
        engine = _engine_option(owners[0], setting.flag_for(config_field.split(".")[-1]))
        assert engine.default == option.default and engine.help == setting.help, name
    # The example: --noise-level says what the engine's says, with the engine's default.
    noise = options["noise_level"]
    assert noise.help == _engine_option("denoise", "--noise-level").help and noise.default is None
    args = parser.parse_args(["--task", "synthesize", "--output", "out", "--size", "32,48,40", "--synth-spacing", "2"])
    params = batch.parameters(args)
    assert params.size == (32, 48, 40) and params.synth_spacing == (2.0, 2.0, 2.0)
    with pytest.raises(SystemExit):
        parser.parse_args(["--task", "synthesize", "--output", "out", "--size", "a,b"])  # the engine's own type


def _python_sources() -> dict[Path, str]:
    folders = (ROOT / "MedDiffFM", ROOT / "MedDiffFMLogic", ROOT / "MedDiffFMWeb")
    return {p: p.read_text(encoding="utf-8") for folder in folders for p in folder.rglob("*.py")
            if "__pycache__" not in p.parts}


def test_the_help_of_every_setting_the_module_passes_is_written_once():
    """The done-criterion of the settings issue, for the settings the Slicer module and the batch script
    pass to the engine: each one's help text is in the code once (its declaration), not copied."""
    sources = _python_sources()
    for name in ENGINE_SETTINGS:
        start = engine_setting(name).help[:30]
        where = [(p.relative_to(ROOT), text.count(start)) for p, text in sources.items() if start in text]
        assert len(where) == 1 and where[0][1] == 1, (name, where)
        assert str(where[0][0]).startswith("MedDiffFMLogic/settings/"), (name, where)


def test_zero_from_a_spin_box_leaves_the_setting_to_the_engine_and_a_spacing_replaces_the_factor():
    from MedDiffFMLogic.cli import build_parser

    files = {"input": "in.nrrd", "output": "out.nrrd"}
    unset = TaskParameters(noise_level=0.0, threshold=0.0, spacing=0.0, synth_spacing=0.0)
    denoise = build_parser().parse_args(["denoise", *engine_arguments("denoise", unset, files)])
    assert denoise.noise_level is None  # estimated by the engine
    superres = engine_arguments("superres", unset.with_(spacing=1.25), files)
    assert "--factor" not in superres  # the engine's parser takes one of the two
    assert build_parser().parse_args(["superres", *superres]).spacing == 1.25
    synthesize = build_parser().parse_args(["synthesize", *engine_arguments("synthesize", unset, files)])
    assert synthesize.spacing is None and synthesize.size == TaskParameters().size


def test_a_synthesized_result_is_named_after_a_given_region_not_after_auto():
    from MedDiffFMLib.tasks import TASKS, result_name

    output = TASKS["synthesize"].outputs[0]
    assert result_name(None, "synthesize", output, "chest").startswith("chest CT")
    assert result_name(None, "synthesize", output, "auto").startswith("CT ")
