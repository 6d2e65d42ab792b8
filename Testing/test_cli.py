import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedDiffFMLogic import ctio
from MedDiffFMLogic.anatomy import ANATOMY_CLASSES
from MedDiffFMLogic.cli import main

ENGINE = Path(__file__).resolve().parents[1] / "MedDiffFMLogic"


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_phantom_command_writes_every_output(tmp_path, capsys):
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("ct", "labels", "lesion", "low")}
    rc = main([
        "phantom", "--region", "abdomen", "-o", str(out["ct"]), "--labels", str(out["labels"]),
        "--lesions", "1", "--lesion-mask", str(out["lesion"]), "--low-dose", str(out["low"]),
        "--size", "64,64,32", "--spacing", "3,3,4", "--seed", "5", "--progress", "json",
    ])
    assert rc == 0
    lines = _json_lines(capsys.readouterr().out)
    assert lines[-1]["stage"] == "done" and set(lines[-1]["outputs"]) == {"image", "labels", "lesion_mask", "low_dose"}
    ct, labels, lesion = (ctio.read_ct(out["ct"]), ctio.read_label_map(out["labels"]), ctio.read_label_map(out["lesion"]))
    assert ct.GetSize() == (64, 64, 32) and ct.GetSpacing() == (3.0, 3.0, 4.0)
    assert ctio.same_grid(ct, labels) and ctio.same_grid(ct, lesion)
    assert set(np.unique(sitk.GetArrayViewFromImage(labels))) <= set(ANATOMY_CLASSES)
    assert sitk.GetArrayViewFromImage(lesion).any()
    noise = ctio.to_array(ctio.read_ct(out["low"])) - ctio.to_array(ct)
    assert noise.std() > 1.0


def test_usage_errors_exit_with_2(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["phantom", "--region", "pelvis", "-o", str(tmp_path / "x.nii.gz")])
    assert exit_info.value.code == 2


def _labels(tmp_path) -> Path:
    """A small oblique, anisotropic label map (body + one organ)."""
    array = np.full((10, 14, 12), 118, np.uint8)
    array[3:7, 4:10, 3:9] = 5  # liver
    array[:, :2] = 0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((7.0, 6.0, 9.0))
    image.SetOrigin((-30.0, 12.5, 40.0))
    angle = 0.3
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0, 0, 0, 1))
    return ctio.write_image(image, tmp_path / "anatomy.nrrd")


def test_synthesize_streams_json_progress_and_keeps_the_grid(tmp_path, tiny_model_card, capsys):
    labels = _labels(tmp_path)
    outputs = []
    for name in ("a", "b"):
        target = tmp_path / f"{name}.nii.gz"
        rc = main([
            "synthesize", "-o", str(target), "--region", "abdomen", "--anatomy", str(labels),
            "--model", str(tiny_model_card), "--steps", "3", "--seed", "11", "--progress", "json",
        ])
        assert rc == 0
        lines = _json_lines(capsys.readouterr().out)
        steps = [l for l in lines if l["stage"] == "synthesize"]
        assert [l["step"] for l in steps] == [0, 1, 2, 3] and all(l["total"] == 3 for l in steps)
        assert all(set(l) == {"stage", "step", "total", "message"} for l in steps)
        assert lines[-1] == {"stage": "done", "outputs": {"image": str(target)}}
        outputs.append(ctio.read_ct(target))
    reference = ctio.read_label_map(labels)
    assert ctio.same_grid(outputs[0], reference, tol=1e-5)
    np.testing.assert_array_equal(ctio.to_array(outputs[0]), ctio.to_array(outputs[1]))  # same seed, same output


def test_a_failure_reports_an_error_line_and_writes_nothing(tmp_path, tiny_model_card, capsys):
    target = tmp_path / "out.nii.gz"
    rc = main([
        "synthesize", "-o", str(target), "--anatomy", str(tmp_path / "missing.nii.gz"),
        "--model", str(tiny_model_card), "--progress", "json",
    ])
    captured = capsys.readouterr()
    assert rc == 1
    last = _json_lines(captured.out)[-1]
    assert last["stage"] == "error" and "missing.nii.gz" in last["error"]
    assert "Traceback" not in captured.err and "error:" in captured.err
    assert not target.exists() and not list(tmp_path.glob(".out*"))


def test_module_entry_point_lists_models_as_a_subprocess(tiny_model_card):
    result = subprocess.run(
        [sys.executable, "-m", "MedDiffFMLogic", "models", "--models-dir", str(tiny_model_card.parent), "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    entry = {e["name"]: e for e in json.loads(result.stdout)}["tiny-test"]
    assert entry["source"] == "given" and entry["kind"] == "base" and entry["card"] == str(tiny_model_card)


def test_the_engine_never_imports_slicer_qt_ctk_or_vtk():
    pattern = re.compile(r"^\s*(import|from)\s+(slicer|qt|ctk|vtk)\b", re.MULTILINE)
    offenders = [str(p) for p in ENGINE.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_threads_option_sets_torch_threads_and_refuses_negative(tmp_path, tiny_model_card, capsys):
    import torch

    torch.set_num_threads(2)
    base = ["synthesize", "-o", str(tmp_path / "s.nii.gz"), "--size", "16,16,16", "--model", str(tiny_model_card),
            "--steps", "1", "--progress", "none"]
    assert main([*base, "--threads", "1"]) == 0 and torch.get_num_threads() == 1
    assert main([*base, "--threads", "-1"]) == 1
    assert "--threads must be at least 0, got -1" in capsys.readouterr().err


def test_a_progress_note_is_a_json_line_without_steps_or_a_line_of_text(capsys):
    import io

    from MedDiffFMLogic.progress import Progress

    stream = io.StringIO()
    Progress("json", stream).note("windows", "53 of 75 windows per step need the network")
    assert _json_lines(stream.getvalue()) == [
        {"stage": "windows", "step": 0, "total": 0, "message": "53 of 75 windows per step need the network"}]
    Progress("bar").note("windows", "53 of 75 windows per step need the network")
    assert capsys.readouterr().err == "windows: 53 of 75 windows per step need the network\n"
    Progress("none").note("windows", "ignored")
    assert capsys.readouterr() == ("", "")


# ------------------------------------------------------------------------------------------- declarations


def test_the_command_line_and_the_settings_declarations_import_no_torch():
    """The Slicer module reads the declarations and must never import torch; --help needs none either."""
    code = ("import sys\n"
            "import MedDiffFMLogic.settings.commands\n"
            "from MedDiffFMLogic.cli import build_parser\n"
            "build_parser().format_help()\n"
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_every_command_line_default_is_its_configs():
    """Each setting is declared once: the parser's default and help come from the config's field."""
    import dataclasses

    from MedDiffFMLogic.cli import build_parser
    from MedDiffFMLogic.settings import declared
    from MedDiffFMLogic.settings.commands import COMMANDS

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices
    for command in COMMANDS:
        actions = {a.dest: a for a in sub[command.name]._actions}
        for name, setting in declared(command.config):
            action = actions[setting.dest_for(name)]
            assert action.help == setting.help and action.default == setting.default, (command.name, name)
        for f in dataclasses.fields(command.config):
            if "setting" in f.metadata:
                assert f.default == f.metadata["setting"].default, (command.name, f.name)
    denoise = {a.dest: a for a in sub["denoise"]._actions}["noise_level"]
    assert denoise.default is None and "estimated from the image" in denoise.help


def test_the_declarations_name_what_the_engine_accepts():
    from MedDiffFMLogic.device import DEVICE_CHOICES
    from MedDiffFMLogic.sampling import PRECISIONS
    from MedDiffFMLogic.settings.common import DEVICES
    from MedDiffFMLogic.settings.windows import PRECISION_NAMES

    assert DEVICES == DEVICE_CHOICES and PRECISION_NAMES == tuple(PRECISIONS)
