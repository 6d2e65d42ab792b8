"""Issue 15, "no silent wrong answers": the same scan stored with other axes gives the same result;
outputs stay physical CT values; every number is checked before work starts; the command line keeps
its contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import make_tiny_net
from MedDiffFMLogic import ctio
from MedDiffFMLogic.grids import Orientation
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.tasks import denoise, inpaint
from MedDiffFMLogic.tasks.common import load_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_card(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("models")
    return str(save_model(make_tiny_net(), folder, name="tiny-trust", kind="base", architecture=TINY.to_dict(),
                          working_spacing=(4.0, 4.0, 4.0)))


def _sideways(image: sitk.Image) -> sitk.Image:
    """The same physical scan stored with permuted and reversed axes (a sagittal-like stack)."""
    return sitk.Flip(sitk.PermuteAxes(image, [2, 0, 1]), [True, False, True])


def _back_on(image: sitk.Image, grid: sitk.Image) -> np.ndarray:
    """Voxels of `image` at the voxel centres of `grid` (the same physical points: nearest is exact)."""
    return ctio.to_array(ctio.resample_onto(image, grid, "nearest"))


def test_orientation_round_trip_is_exact():
    image = make_phantom(PhantomConfig(region="chest", size=(20, 18, 12), spacing=(2.0, 3.0, 4.0), seed=1)).image
    image.SetOrigin((-7.5, 3.25, 11.0))
    stored = _sideways(image)
    orientation = Orientation(stored)
    assert not orientation.identity
    axial = orientation.to_axial(stored)
    assert axial.GetSize() == image.GetSize() and np.allclose(axial.GetOrigin(), image.GetOrigin())
    assert np.allclose(axial.GetDirection(), np.eye(3).ravel())
    np.testing.assert_array_equal(ctio.to_array(axial), ctio.to_array(image))
    back = orientation.from_axial(axial, stored)
    np.testing.assert_array_equal(ctio.to_array(back), ctio.to_array(stored))
    assert back.GetOrigin() == stored.GetOrigin() and back.GetDirection() == stored.GetDirection()
    assert back.GetSpacing() == stored.GetSpacing()
    # Without the grid, the axial grid's voxels in the stored axis order: the same geometry.
    made = orientation.from_axial(axial)
    assert ctio.same_grid(made, stored, tol=1e-9)


@pytest.mark.parametrize("spacing", [(4.0, 4.0, 4.0), (4.0, 4.0, 6.0)], ids=["native", "resampled"])
def test_denoise_gives_the_same_result_whatever_the_axis_order(base_card, spacing):
    image = make_phantom(PhantomConfig(region="chest", size=(32, 32, 24), spacing=spacing, seed=2)).image
    image = sitk.AdditiveGaussianNoise(image, 25.0, 0.0, 7)
    stored = _sideways(image)
    model = load_model(base_card, "cpu")
    config = denoise.DenoiseConfig(steps=3, seed=5)  # noise level estimated: on axial slices in both
    axial, info_a = denoise.denoise_image(image, config, model)
    sideways, info_s = denoise.denoise_image(stored, config, model)
    assert info_a.t_start == info_s.t_start
    assert ctio.same_grid(sideways, stored, tol=0.0)  # the user's grid, bit for bit
    a, s = ctio.to_array(axial), _back_on(sideways, image)
    assert not np.array_equal(a, ctio.to_array(image))
    np.testing.assert_allclose(s, a, atol=0.05)


def test_inpaint_gives_the_same_result_whatever_the_axis_order(tmp_path, base_card):
    phantom = make_phantom(PhantomConfig(region="chest", size=(32, 32, 24), spacing=(4.0, 4.0, 4.0), lesions=1,
                                         seed=3, lesion_radius_mm=(8.0, 10.0)))
    config = inpaint.InpaintConfig(model=base_card, steps=3, jump_length=2, resamplings=1, seed=2)
    results = []
    for name, transform in (("axial", lambda im: im), ("sideways", _sideways)):
        ct = ctio.write_image(transform(phantom.image), tmp_path / f"{name}.nrrd")
        mask = ctio.write_image(transform(phantom.lesion_mask), tmp_path / f"{name}_mask.nrrd")
        out = inpaint.run(config, ct, mask, tmp_path / f"{name}_out.nrrd")
        results.append(ctio.read_ct(out["image"]))
        assert ctio.same_grid(results[-1], ctio.read_ct(ct), tol=0.0)
    a, s = ctio.to_array(results[0]), _back_on(results[1], results[0])
    assert not np.array_equal(a, ctio.to_array(phantom.image))
    np.testing.assert_allclose(s, a, atol=0.05)


def test_results_stay_physical_ct_values(tmp_path, base_card):
    from MedDiffFMLogic.tasks import anomaly, synthesize
    from MedDiffFMLogic.units import PHYSICAL_HU

    config = synthesize.SynthesizeConfig(model=base_card, region="chest", size=(32, 32, 32), steps=3, seed=1)
    out = synthesize.run(config, tmp_path / "synth.nrrd")
    values = ctio.to_array(ctio.read_ct(out["image"]))
    assert values.min() >= PHYSICAL_HU[0] and values.max() <= PHYSICAL_HU[1]
    assert (values == PHYSICAL_HU[0]).any()  # the tiny random model does reach below -1024: clamped
    phantom = make_phantom(PhantomConfig(region="chest", size=(32, 32, 24), spacing=(4.0, 4.0, 4.0), seed=4))
    ct = ctio.write_image(phantom.image, tmp_path / "ct.nrrd")
    config = anomaly.AnomalyConfig(model=base_card, steps=3, t_start=300, seed=1)
    written = anomaly.run(config, ct, tmp_path / "map.nrrd", healthy_out=tmp_path / "healthy.nrrd")
    healthy = ctio.to_array(ctio.read_ct(written["healthy"]))
    low = min(PHYSICAL_HU[0], float(ctio.to_array(phantom.image).min()))
    assert healthy.min() >= low


# ------------------------------------------------------------------------------------------- numbers and CLI


def _json_lines(text: str) -> list[dict]:
    import json

    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


@pytest.mark.parametrize("argv, option", [
    (["synthesize", "-o", "{out}", "--steps", "0"], "--steps"),
    (["synthesize", "-o", "{out}", "--spacing", "0"], "--spacing"),
    (["synthesize", "-o", "{out}", "--size", "32,0,32"], "--size"),
    (["denoise", "{ct}", "-o", "{out}", "--zeta", "2"], "--zeta"),
    (["denoise", "{ct}", "-o", "{out}", "--strength", "nan"], "--strength"),
    (["anomaly", "{ct}", "-o", "{out}", "--reconstructions", "0"], "--reconstructions"),
    (["inpaint", "{ct}", "--mask", "{ct}", "-o", "{out}", "--overlap", "1"], "--overlap"),
    (["superres", "{ct}", "-o", "{out}", "--factor", "1"], "--factor"),
    (["phantom", "-o", "{out}", "--spacing", "-1"], "--spacing"),
    (["phantom", "-o", "{out}", "--dose", "0"], "--dose"),
    (["denoise", "{ct}", "-o", "{out}", "--threads", "-1"], "--threads"),
    (["train", "--config", "tiny", "-o", "{out}", "--steps", "0"], "--steps"),
    (["train", "--config", "tiny", "-o", "{out}", "--threads", "-2"], "--threads"),
    (["finetune", "--task", "lesion", "--base", "{ct}", "--config", "tiny", "-o", "{out}", "--threads", "0"],
     "--threads"),
])
def test_every_number_is_checked_before_work_with_a_json_error_line(tmp_path, capsys, argv, option):
    from MedDiffFMLogic.cli import main

    ct = tmp_path / "missing_input.nrrd"  # never read: the numbers are checked first
    out = tmp_path / "out.nrrd"
    argv = [a.format(ct=ct, out=out) for a in argv] + ["--progress", "json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    errors = [line for line in _json_lines(captured.out) if line.get("stage") == "error"]
    assert len(errors) == 1 and errors[0]["error"].startswith(f"{option} must be")
    assert "Traceback" not in captured.err and f"error: {option} must be" in captured.err
    assert not out.exists()


def test_a_config_made_in_code_is_checked_too():
    from MedDiffFMLogic.errors import InputError
    from MedDiffFMLogic.settings import check_config
    from MedDiffFMLogic.settings.synthesize import SynthesizeConfig

    check_config(SynthesizeConfig())
    with pytest.raises(InputError, match="--steps must be at least 1"):
        check_config(SynthesizeConfig(steps=0))


def test_controlnet_initialisation_prints_nothing(capfd):
    from MedDiffFMLogic.controlnet import ControlNetConfig, MedDiffFMControlNet

    MedDiffFMControlNet.from_base(make_tiny_net(), ControlNetConfig(task="lesion", conditioning_channels=8))
    captured = capfd.readouterr()
    assert "model updated" not in captured.out + captured.err


def test_long_options_are_not_prefix_matched_and_misspelt_ones_get_a_suggestion(tmp_path, capsys):
    from MedDiffFMLogic.cli import main

    for wrong in ("--step", "--stepz"):
        with pytest.raises(SystemExit) as exc:
            main(["synthesize", "-o", str(tmp_path / "x.nrrd"), wrong, "3"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert f"unrecognized arguments: {wrong} 3" in err and f"{wrong}: did you mean --steps?" in err
    assert not (tmp_path / "x.nrrd").exists()


def test_version_and_options_each_command_offers(capsys):
    from MedDiffFMLogic.cli import build_parser, main, version

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"meddifffm {version()}"
    assert version() != "unknown"
    commands = build_parser().command_parsers()
    for name, parser in commands.items():
        assert not parser.allow_abbrev, name  # training's commands too
    options = {a.dest: a for a in commands["models"]._actions}
    assert not {"force", "device", "seed"} & set(options)
    region = {a.dest: a for a in commands["phantom"]._actions}["region"]
    assert region.default == "chest" and region.help
    assert not {"force", "device"} & {a.dest for a in commands["phantom"]._actions}


def test_models_prints_a_header_and_keeps_its_columns(tmp_path, base_card, capsys):
    from MedDiffFMLogic.cli import main

    long_name = "a-rather-long-model-name-beyond-twenty-eight-characters"
    save_model(make_tiny_net(), tmp_path, name=long_name, kind="base", architecture=TINY.to_dict(),
               working_spacing=(4.0, 4.0, 4.0))
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines[0].split()[:3] == ["NAME", "SOURCE", "KIND"]
    column = lines[0].index("SOURCE")
    assert any(line.startswith(long_name) for line in lines)
    for line in lines[1:]:
        assert line[column - 2:column] == "  " and line[column] != " "  # every row's source starts there


def test_building_the_command_line_imports_no_torch():
    """`meddifffm --help` must not wait for torch and MONAI (seconds). Training's commands are left out
    here: they are built by training/commands.py (see the report of issue 15 for its import)."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "stub = types.ModuleType('MedDiffFMLogic.training.commands'); stub.add_command = lambda sub: None\n"
        "sys.modules['MedDiffFMLogic.training.commands'] = stub\n"
        "from MedDiffFMLogic.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for name in ('synthesize', 'denoise', 'phantom', 'models'):\n"
        "    try:\n        main([name, '--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'monai', 'SimpleITK', 'scipy') if m in sys.modules))\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_numbers_that_matter_reach_a_terminal(tmp_path, base_card, capsys):
    from MedDiffFMLogic.cli import main

    phantom = make_phantom(PhantomConfig(region="chest", size=(32, 32, 16), spacing=(4.0, 4.0, 4.0), seed=6))
    ct = ctio.write_image(sitk.AdditiveGaussianNoise(phantom.image, 20.0, 0.0, 3), tmp_path / "ct.nrrd")
    common = ["--model", base_card, "--steps", "2", "--progress", "bar"]
    assert main(["denoise", str(ct), "-o", str(tmp_path / "d.nrrd"), *common]) == 0
    err = capsys.readouterr().err
    assert "noise: noise level" in err and "(estimated" in err and "sampling starts at timestep" in err
    assert "changed: " in err and "of the voxels changed by more than" in err
    assert main(["anomaly", str(ct), "-o", str(tmp_path / "m.nrrd"), "--t-start", "200", *common]) == 0
    err = capsys.readouterr().err
    assert "anomaly: score" in err and "threshold" in err and "voxels above it" in err


def test_anomaly_count_of_reconstructions_is_not_one_letter_from_seed():
    from MedDiffFMLogic.cli import build_parser

    options = [s for a in build_parser().command_parsers()["anomaly"]._actions for s in a.option_strings]
    assert "--seed" in options and "--reconstructions" in options and "--seeds" not in options


def test_an_empty_anomaly_mask_under_a_high_map_is_flagged(tmp_path, base_card):
    from MedDiffFMLogic.tasks import anomaly

    phantom = make_phantom(PhantomConfig(region="chest", size=(32, 32, 16), spacing=(4.0, 4.0, 4.0), lesions=1,
                                         seed=8, lesion_radius_mm=(8.0, 10.0)))
    model = load_model(base_card, "cpu")
    config = anomaly.AnomalyConfig(steps=2, t_start=200, seed=1)
    found = anomaly.anomaly_map(phantom.image, config, model)
    assert found.score > found.threshold  # the automatic threshold flags something
    too_high = anomaly.AnomalyConfig(steps=2, t_start=200, seed=1, threshold=found.score + 10.0)
    with pytest.warns(UserWarning, match="the anomaly mask is empty"):
        anomaly.anomaly_map(phantom.image, too_high, model)


def test_an_oblique_grid_keeps_the_nearest_axis_permutation():
    angle = 0.3
    rotation = (np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0)
    image = sitk.Image([6, 5, 4], sitk.sitkFloat32)
    image.SetDirection(rotation)
    assert Orientation(image).identity  # close enough to axial: left as it is
    stored = _sideways(image)
    orientation = Orientation(stored)
    axial = orientation.to_axial(stored)
    np.testing.assert_allclose(axial.GetDirection(), rotation, atol=1e-12)  # the oblique tilt itself stays
    assert axial.GetSize() == image.GetSize()
    assert np.allclose(axial.TransformIndexToPhysicalPoint((0, 0, 0)), image.TransformIndexToPhysicalPoint((0, 0, 0)))
