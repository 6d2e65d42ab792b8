"""The tasks at 32^3 with tiny random networks: geometry kept, outside-mask voxels kept, fixed seeds
repeat, bad masks and paths refused, and the CLI commands with JSON progress."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import make_tiny_net
from MedDiffFMLogic import ctio
from MedDiffFMLogic.cli import main
from MedDiffFMLogic.controlnet import ControlNetConfig, MedDiffFMControlNet
from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.modelfiles import save_model
from MedDiffFMLogic.network import TINY
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.tasks import anomaly, denoise, inpaint, lesion, superres
from MedDiffFMLogic.tasks.common import load_model
from MedDiffFMLogic.tasks.masks import read_mask

WORKING_SPACING = (4.0, 4.0, 4.0)
ANGLE = 0.3
OBLIQUE = (np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0, 0.0, 0.0, 1.0)


# ------------------------------------------------------------------------------------------- fixtures


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Card paths of a tiny base model and of a lesion and a super-resolution ControlNet trained "on" it
    (random weights, zero convolutions randomised so that the control volume matters)."""
    folder = tmp_path_factory.mktemp("models")
    base = make_tiny_net()
    cards = {"base": str(save_model(base, folder, name="tiny-test", kind="base", architecture=TINY.to_dict(),
                                    working_spacing=WORKING_SPACING))}
    for k, task in enumerate(("lesion", "superres")):
        net = MedDiffFMControlNet.from_base(base, ControlNetConfig(task=task, conditioning_channels=8))
        torch.manual_seed(10 + k)
        with torch.no_grad():
            for p in net.parameters():
                if p.dim() > 1 and not p.abs().sum():
                    p.normal_(0.0, 0.05)
        cards[task] = str(save_model(
            net, folder, name=f"tiny-{task}", kind="controlnet", architecture=TINY.to_dict(),
            working_spacing=WORKING_SPACING, base_model="tiny-test", control=net.config.to_dict(),
        ))
    return cards


def _ct(folder: Path, name: str, size=(28, 30, 20), spacing=(4.0, 4.0, 6.0), origin=(-30.0, 12.5, 40.0),
        direction=OBLIQUE, pixel=sitk.sitkFloat32, seed: int = 3) -> tuple[Path, Path]:
    """A chest phantom with one lung nodule, placed on an oblique, anisotropic grid with a non-zero
    origin; returns the CT and lesion-mask paths (NRRD keeps the geometry exactly)."""
    phantom = make_phantom(PhantomConfig(region="chest", size=size, spacing=spacing, lesions=1, seed=seed,
                                         lesion_radius_mm=(8.0, 10.0)))
    out = []
    for image, suffix in ((sitk.Cast(phantom.image, pixel), "ct"), (phantom.lesion_mask, "lesion")):
        image.SetOrigin(origin)
        image.SetDirection(direction)
        out.append(ctio.write_image(image, folder / f"{name}_{suffix}.nrrd"))
    return out[0], out[1]


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _exact_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return ctio.same_grid(a, b, tol=1e-9)


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- denoise


def test_denoise_resampled_run_keeps_the_grid_repeats_and_leaves_the_input(tmp_path, models):
    ct, _ = _ct(tmp_path, "a")  # 6 mm slices: the model works on its 4 mm grid and resamples back
    before = _digest(ct)
    config = denoise.DenoiseConfig(model=models["base"], steps=3, noise_level=30.0, seed=4)
    outs = [denoise.run(config, ct, tmp_path / f"d{k}.nii.gz")["image"] for k in range(2)]
    assert _digest(ct) == before
    image, first, second = ctio.read_ct(ct), ctio.read_ct(outs[0]), ctio.read_ct(outs[1])
    assert ctio.same_grid(first, image, tol=1e-5)  # NIfTI stores geometry as float32
    np.testing.assert_array_equal(ctio.to_array(first), ctio.to_array(second))
    assert not np.array_equal(ctio.to_array(first), ctio.to_array(image))


def test_denoise_native_grid_uses_the_input_itself(tmp_path, models):
    ct, _ = _ct(tmp_path, "n", spacing=(4.0, 4.0, 4.0), size=(32, 32, 16))
    image = ctio.read_ct(ct)
    model = load_model(models["base"], "cpu")
    result, info = denoise.denoise_image(image, denoise.DenoiseConfig(noise_level=20.0, steps=2), model)
    assert info.native_grid and info.noise_level_hu > 0 and info.t_start == info.timesteps[0]
    assert _exact_grid(result, image)
    out, original = ctio.to_array(result), ctio.to_array(image)
    # The model's output lies inside the chest window; values beyond it (bone) can only be the input's,
    # kept where the output saturates.
    beyond = out > 400.0
    assert np.array_equal(out[beyond], original[beyond])
    assert not np.array_equal(out, original)
    with pytest.raises(InputError, match="noise-level"):
        denoise.denoise_image(image, denoise.DenoiseConfig(noise_level=-1.0), model)


def test_denoise_keeps_air_as_air_in_a_narrow_window(tmp_path, models):
    # The abdomen window is [-120, 240] HU: air reaches the network as -120 HU, and a model may return
    # it as -110 HU, which is no edge value; the input's -1000 must come back instead.
    phantom = make_phantom(PhantomConfig(region="abdomen", size=(32, 32, 16), spacing=(4.0, 4.0, 4.0), seed=5))
    image = phantom.image
    model = load_model(models["base"], "cpu")
    result, _ = denoise.denoise_image(image, denoise.DenoiseConfig(region="abdomen", noise_level=20.0, steps=2), model)
    out, original = ctio.to_array(result), ctio.to_array(image)
    air = original < -500.0
    assert air.any() and np.array_equal(out[air], original[air])
    tissue = (original > -60.0) & (original < 200.0)
    assert not np.array_equal(out[tissue], original[tissue])  # inside the window the model still works


def test_denoise_off_the_working_grid_keeps_the_soft_tissue_beside_bone(tmp_path, models):
    """The network sees the input clipped to the region's window, so the detail finer than its grid is
    measured against the clipped input: a noise-free skull edge on a 1 mm grid (the model's is 4 mm)
    comes back as it was. Measured against the unclipped input, the bone blurred across the coarse grid
    put errors of hundreds of HU into the tissue beside it (a real head CT lost 6 dB to it)."""
    from MedDiffFMLogic.sampling import SlidingWindowEstimator

    class NoNoiseSeen(SlidingWindowEstimator):  # a denoiser that finds no noise: the input is its answer
        def __call__(self, x, t):
            return torch.zeros_like(x)

    zz, yy, xx = np.mgrid[:24, :40, :40]
    bone = xx + 0.37 * yy < 17.3  # an oblique edge, off the 4 mm grid
    image = sitk.GetImageFromArray(np.where(bone, 1200.0, 40.0).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 1.0))
    model = load_model(models["base"], "cpu", estimator=NoNoiseSeen)
    result, info = denoise.denoise_image(image, denoise.DenoiseConfig(region="head_neck", noise_level=1.0), model)
    assert not info.native_grid
    out = ctio.to_array(result)
    np.testing.assert_array_equal(out[bone], 1200.0)  # beyond the window: the input's
    assert np.abs(out[~bone] - 40.0).max() < 5.0


# ------------------------------------------------------------------------------------------- inpaint


def test_inpaint_keeps_every_voxel_outside_the_mask_bit_for_bit(tmp_path, models):
    ct, lesion_path = _ct(tmp_path, "i", pixel=sitk.sitkInt16)
    # The mask comes on another grid (2 mm, shifted, axis-aligned) and is resampled nearest-neighbour.
    mask_image = ctio.read_label_map(lesion_path)
    other = ctio.resample_to_spacing(mask_image, (2.0, 2.0, 2.5), "nearest")
    other.SetOrigin([o + 0.7 for o in other.GetOrigin()])
    mask_path = ctio.write_image(ctio.resample_onto(mask_image, other, "nearest", 0), tmp_path / "mask_other.nrrd")
    config = inpaint.InpaintConfig(model=models["base"], steps=4, jump_length=2, resamplings=2, seed=1)
    outs = [inpaint.run(config, ct, mask_path, tmp_path / f"o{k}.nrrd", tmp_path / f"c{k}.nrrd") for k in range(2)]
    image = sitk.ReadImage(str(ct))
    result = sitk.ReadImage(outs[0]["image"])
    assert result.GetPixelID() == sitk.sitkInt16 and _exact_grid(result, image)
    region = read_mask(mask_path, ctio.read_ct(ct))
    changed = sitk.GetArrayFromImage(sitk.ReadImage(outs[0]["change_mask"])).astype(bool)
    np.testing.assert_array_equal(changed, region)
    a, b = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(result)
    assert region.any() and np.array_equal(a[~region], b[~region])
    assert not np.array_equal(a[region], b[region])
    np.testing.assert_array_equal(b, sitk.GetArrayFromImage(sitk.ReadImage(outs[1]["image"])))


def test_inpaint_on_the_native_grid(tmp_path, models):
    ct, lesion_path = _ct(tmp_path, "j", spacing=(4.0, 4.0, 4.0), size=(32, 32, 16), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    out = inpaint.run(inpaint.InpaintConfig(model=models["base"], steps=3, resamplings=1), ct, lesion_path,
                      tmp_path / "out.nii.gz")
    a, b = ctio.to_array(ctio.read_ct(ct)), ctio.to_array(ctio.read_ct(out["image"]))
    region = read_mask(lesion_path, ctio.read_ct(ct))
    assert np.array_equal(a[~region], b[~region]) and not np.array_equal(a[region], b[region])


# ------------------------------------------------------------------------------------------- masks


def _label_map(folder: Path, name: str, array: np.ndarray, reference: sitk.Image, shift=(0.0, 0.0, 0.0)) -> Path:
    image = ctio.from_array(array.astype(np.uint8), reference)
    image.SetOrigin([o + s for o, s in zip(reference.GetOrigin(), shift)])
    return ctio.write_image(image, folder / f"{name}.nrrd")


def test_masks_are_checked_with_clear_errors(tmp_path):
    ct, _ = _ct(tmp_path, "m")
    image = ctio.read_ct(ct)
    shape = tuple(reversed(image.GetSize()))
    empty = _label_map(tmp_path, "empty", np.zeros(shape), image)
    with pytest.raises(InputError, match="empty"):
        read_mask(empty, image)
    blob = np.zeros(shape)
    blob[5:9, 10:15, 10:15] = 1
    far = _label_map(tmp_path, "far", blob, image, shift=(0.0, 0.0, 5000.0))
    with pytest.raises(InputError, match="outside the image"):
        read_mask(far, image)
    two = blob.copy()
    two[12:14, 3:6, 3:6] = 7
    several = _label_map(tmp_path, "two", two, image)
    with pytest.raises(InputError, match="--label"):
        read_mask(several, image)
    np.testing.assert_array_equal(read_mask(several, image, label=7), two == 7)
    with pytest.raises(InputError, match="no voxels with label 3"):
        read_mask(several, image, label=3)


def test_cli_refuses_bad_masks_and_overwriting_the_input(tmp_path, models, capsys):
    ct, lesion_path = _ct(tmp_path, "c")
    image = ctio.read_ct(ct)
    empty = _label_map(tmp_path, "empty", np.zeros(tuple(reversed(image.GetSize()))), image)
    before = _digest(ct)
    cases = [
        (["inpaint", str(ct), "--mask", str(empty), "-o", str(tmp_path / "x.nrrd")], "empty"),
        (["lesion", str(ct), "--mask", str(empty), "-o", str(tmp_path / "x.nrrd"),
          "--controlnet", models["lesion"]], "empty"),
        (["denoise", str(ct), "-o", str(ct)], "input file"),
        (["anomaly", str(ct), "-o", str(tmp_path / "m.nrrd"), "--mask-out", str(ct)], "input file"),
        (["inpaint", str(ct), "--mask", str(lesion_path), "-o", str(lesion_path)], "input file"),
        (["superres", str(ct), "-o", str(ct)], "input file"),
        (["lesion", str(ct), "--mask", str(lesion_path), "-o", str(tmp_path / "x.nrrd"),
          "--controlnet", models["superres"]], "'lesion' ControlNet"),
    ]
    for argv, message in cases:
        rc = main([*argv, "--model", models["base"], "--steps", "1", "--progress", "json"])
        lines = _json_lines(capsys.readouterr().out)
        assert rc == 1 and lines[-1]["stage"] == "error" and message in lines[-1]["error"], (argv, lines[-1])
    assert _digest(ct) == before and not (tmp_path / "x.nrrd").exists()


# ------------------------------------------------------------------------------------------- anomaly


def test_anomaly_map_mask_roi_and_seeds(tmp_path, models):
    ct, lesion_path = _ct(tmp_path, "a")
    image = ctio.read_ct(ct)
    model = load_model(models["base"], "cpu")
    roi = np.zeros(tuple(reversed(image.GetSize())), bool)
    roi[:, 5:25, 4:24] = True
    config = anomaly.AnomalyConfig(model=models["base"], steps=3, t_start=950, seed=2)
    result = anomaly.anomaly_map(image, config, model, roi)
    again = anomaly.anomaly_map(image, config, model, roi)
    for out in (result.map, result.mask, result.healthy):
        assert _exact_grid(out, image)
    m = ctio.to_array(result.map)
    np.testing.assert_array_equal(m, ctio.to_array(again.map))
    assert (m[~roi] == 0).all() and (m[roi] > 0).any()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result.mask).astype(bool), m > result.threshold)
    assert result.score >= np.median(m[roi])
    fixed = anomaly.anomaly_map(image, anomaly.AnomalyConfig(model=models["base"], steps=3, threshold=5.0, seed=2),
                                model)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(fixed.mask).astype(bool), ctio.to_array(fixed.map) > 5.0)
    averaged = anomaly.anomaly_map(image, anomaly.AnomalyConfig(model=models["base"], steps=3, seeds=2, seed=2), model, roi)
    assert not np.array_equal(ctio.to_array(averaged.healthy), ctio.to_array(result.healthy))


def test_anomaly_cli_with_roi_labels(tmp_path, models, capsys):
    ct, _ = _ct(tmp_path, "r")
    image = ctio.read_ct(ct)
    labels = np.zeros(tuple(reversed(image.GetSize())), np.uint8)
    labels[:, 4:14, :] = 5
    labels[:, 14:26, :] = 9
    roi = _label_map(tmp_path, "roi", labels, image)
    outs = {k: tmp_path / f"{k}.nrrd" for k in ("map", "mask", "healthy")}
    rc = main(["anomaly", str(ct), "-o", str(outs["map"]), "--mask-out", str(outs["mask"]), "--healthy-out",
               str(outs["healthy"]), "--roi", str(roi), "--roi-labels", "9", "--model", models["base"],
               "--steps", "2", "--progress", "json"])
    lines = _json_lines(capsys.readouterr().out)
    assert rc == 0 and lines[-1] == {"stage": "done", "outputs": {k: str(v) for k, v in outs.items()}}
    assert any(l["stage"] == "anomaly" and l["step"] == 2 for l in lines)
    m = ctio.to_array(ctio.read_ct(outs["map"], check_hu=False))
    assert (m[labels != 9] == 0).all() and m[labels == 9].max() > 0
    assert _exact_grid(ctio.read_label_map(outs["mask"]), image)
    # --roi as label names of the --anatomy map (9 is the left adrenal gland in TotalSegmentator's classes).
    only = tmp_path / "only.nrrd"
    rc = main(["anomaly", str(ct), "-o", str(only), "--anatomy", str(roi), "--roi", "adrenal_gland_left", "--model", models["base"],
               "--steps", "1", "--progress", "none"])
    m = ctio.to_array(ctio.read_ct(only, check_hu=False))
    assert rc == 0 and (m[labels != 9] == 0).all() and m[labels == 9].max() > 0
    capsys.readouterr()
    rc = main(["anomaly", str(ct), "-o", str(only), "--roi", "spleen", "--model", models["base"], "--progress", "json"])
    assert rc == 1 and "--anatomy" in _json_lines(capsys.readouterr().out)[-1]["error"]


# ------------------------------------------------------------------------------------------- lesion


def test_lesion_changes_only_the_mask_and_its_margin(tmp_path, models, capsys):
    ct, lesion_path = _ct(tmp_path, "l")
    image = ctio.read_ct(ct)
    outs = []
    for k in range(2):
        out, change = tmp_path / f"l{k}.nrrd", tmp_path / f"ch{k}.nrrd"
        rc = main(["lesion", str(ct), "--mask", str(lesion_path), "-o", str(out), "--change-mask", str(change),
                   "--margin", "4", "--model", models["base"], "--controlnet", models["lesion"], "--steps", "3",
                   "--jump-length", "1", "--resamplings", "2", "--seed", "5", "--progress", "json"])
        lines = _json_lines(capsys.readouterr().out)
        assert rc == 0 and lines[-1]["outputs"] == {"image": str(out), "change_mask": str(change)}
        outs.append((ctio.read_ct(out), ctio.read_label_map(change)))
    (result, change), (again, _) = outs
    assert _exact_grid(result, image) and _exact_grid(change, image)
    lesion_mask = read_mask(lesion_path, image)
    changed = sitk.GetArrayFromImage(change).astype(bool)
    np.testing.assert_array_equal(changed, lesion.grow(lesion_mask, image.GetSpacing(), 4.0))
    assert changed.sum() > lesion_mask.sum() and changed[lesion_mask].all()
    a, b = ctio.to_array(image), ctio.to_array(result)
    assert np.array_equal(a[~changed], b[~changed]) and not np.array_equal(a[lesion_mask], b[lesion_mask])
    np.testing.assert_array_equal(b, ctio.to_array(again))


def test_lesion_margin_zero_and_the_control_matters(tmp_path, models):
    ct, lesion_path = _ct(tmp_path, "z", spacing=(4.0, 4.0, 4.0), size=(32, 32, 16))
    image = ctio.read_ct(ct)
    mask = read_mask(lesion_path, image)
    model = load_model(models["base"], "cpu", models["lesion"])
    config = lesion.LesionConfig(margin_mm=0.0, steps=3, resamplings=1, seed=1)
    result, changed = lesion.generate_lesion(image, mask, config, model)
    np.testing.assert_array_equal(changed, mask)
    a, b = ctio.to_array(image), ctio.to_array(result)
    assert np.array_equal(a[~mask], b[~mask])
    # The same run through inpainting with the base model alone differs: the ControlNet is in use.
    base = load_model(models["base"], "cpu")
    plain = inpaint.regenerate(image, mask, base, region="chest", steps=3, jump_length=5, resamplings=1, eta=1.0,
                               seed=1, windows=config.windows)
    assert not np.allclose(plain[mask], b[mask])
    with pytest.raises(InputError, match="'lesion' ControlNet"):
        lesion.generate_lesion(image, mask, config, base)


# ------------------------------------------------------------------------------------------- superres


def test_superres_grid_slab_consistency_and_repeat(tmp_path, models, capsys):
    ct, _ = _ct(tmp_path, "s", size=(28, 30, 8), spacing=(4.0, 4.0, 10.0))
    image = ctio.read_ct(ct)
    outs = []
    for k in range(2):
        out = tmp_path / f"sr{k}.nrrd"
        rc = main(["superres", str(ct), "-o", str(out), "--factor", "2.5", "--model", models["base"],
                   "--controlnet", models["superres"], "--steps", "3", "--seed", "2", "--progress", "json"])
        lines = _json_lines(capsys.readouterr().out)
        assert rc == 0 and [l["step"] for l in lines if l["stage"] == "superres"] == [0, 1, 2, 3]
        outs.append(ctio.read_ct(out))
    result = outs[0]
    np.testing.assert_array_equal(ctio.to_array(result), ctio.to_array(outs[1]))
    assert result.GetSize() == (28, 30, 20) and result.GetSpacing() == (4.0, 4.0, 4.0)
    assert result.GetDirection() == image.GetDirection()
    # Same slab stack: the first thin slice's lower face is the first thick slice's lower face.
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(
        np.asarray(result.GetOrigin()) - direction[:, 2] * 2.0, np.asarray(image.GetOrigin()) - direction[:, 2] * 5.0,
        atol=1e-9,
    )
    # Slab consistency: every thick slice is the average of the thin slices its slab covers.
    thin, thick = ctio.to_array(result).astype(np.float64), ctio.to_array(image)
    weights = np.zeros((8, 20))
    for k in range(8):
        for j in range(20):
            lo, hi = max(k * 10 - 5, j * 4 - 5.0), min(k * 10 + 5, j * 4 - 1.0)
            weights[k, j] = max(hi - lo, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.einsum("kz,zhw->khw", weights, thin), thick, atol=0.05)


def test_superres_spacing_option_and_errors(tmp_path, models):
    ct, _ = _ct(tmp_path, "t", size=(28, 30, 8), spacing=(4.0, 4.0, 8.0))
    image = ctio.read_ct(ct)
    assert superres.output_grid(image, spacing=2.0).GetSize() == (28, 30, 32)
    assert superres.output_grid(image, factor=5).GetSpacing()[2] == pytest.approx(1.6)
    with pytest.raises(InputError, match="--factor"):
        superres.output_grid(image, factor=1.0)
    with pytest.raises(InputError, match="apart already"):
        superres.output_grid(image, spacing=9.0)
    model = load_model(models["base"], "cpu", models["superres"])
    config = superres.SuperresConfig(spacing=4.0, steps=2, consistency=False)
    result = superres.super_resolve(image, config, model)  # 4 mm is the working grid: no resampling
    assert result.GetSize() == (28, 30, 16) and ctio.to_array(result).max() < 401.0  # the window, up to the data step's overshoot
    with pytest.raises(InputError, match="'superres' ControlNet"):
        superres.super_resolve(image, config, load_model(models["base"], "cpu", models["lesion"]))


# ------------------------------------------------------------------------------------------- demo


def test_demo_runs_every_task_and_writes_a_montage_and_summary(tmp_path, capsys):
    from MedDiffFMLogic import demo

    config = demo.DemoConfig(
        denoise_steps=1, anomaly_steps=1, inpaint_steps=1, lesion_steps=1, superres_steps=1, synthesize_steps=1,
        train_steps=2, max_size=(64, 64, 32), device="cpu",  # 96 mm at 1.5 mm: soft tissue to estimate the noise on
    )
    outputs = demo.run(config, tmp_path / "demo")
    summary = json.loads(Path(outputs["summary"]).read_text())
    assert set(summary["figures"]) == {"denoise", "anomaly", "inpaint", "lesion", "superres", "synthesize"}
    # the chest scanned whole (the bundled model's training field of view, at least 256 mm), then cropped
    # around its nodule to the voxel cap
    from MedDiffFMLogic.modelfiles import find_model, read_card
    from MedDiffFMLogic.tasks.common import DEFAULT_MODEL

    trained_fov = read_card(find_model(DEFAULT_MODEL)).training_fov_mm()
    assert summary["phantom"]["size"] == [64, 64, 32] and summary["phantom"]["nodule_voxels"] > 0
    assert summary["phantom"]["scanned_mm"][:2] == pytest.approx([max(256.0, f) for f in trained_fov])
    if summary["figures"]["lesion"]["mirrored"]:  # a new nodule in the other lung, not on the old one
        new = sitk.GetArrayFromImage(ctio.read_label_map(Path(outputs["ct"]).parent / "lesion_new_mask.nii.gz")).astype(bool)
        old = sitk.GetArrayFromImage(ctio.read_label_map(outputs["lesion_mask"])).astype(bool)
        assert new.any() and not (new & old).any()
    assert summary["figures"]["inpaint"]["outside_mask_identical"] is True
    assert Path(outputs["montage"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ct = ctio.read_ct(outputs["ct"])
    for key in ("denoised", "anomaly_map", "inpainted", "lesion_generated", "synthesized"):
        assert _exact_grid(ctio.read_ct(outputs[key], check_hu=False), ct), key  # results, not scans
    assert all(Path(v).exists() for v in outputs.values())


def test_the_demo_crop_holds_the_nodule_and_its_mirror_image_when_both_fit():
    from MedDiffFMLogic.demo import crop_around_nodule

    nodule = np.zeros((4, 50, 100), bool)
    nodule[1:3, 20:25, 10:15] = True  # its mirror image across the middle column: x 85..89
    ys, xs = crop_around_nodule(nodule, (96, 30))
    assert (xs.start, xs.stop) == (2, 98) and ys.stop - ys.start == 30 and ys.start <= 20 and ys.stop >= 25
    assert nodule[:, ys, xs].sum() == nodule.sum() and nodule[:, :, ::-1][:, ys, xs].sum() == nodule.sum()
    ys, xs = crop_around_nodule(nodule, (80, 30))  # exactly as wide as both
    assert (xs.start, xs.stop) == (10, 90)
    ys, xs = crop_around_nodule(nodule, (70, 30))  # too narrow for both: around the nodule, inside the volume
    assert (xs.start, xs.stop) == (0, 70) and nodule[:, ys, xs].sum() == nodule.sum()
    ys, xs = crop_around_nodule(nodule, (8, 8))
    assert (xs.start, xs.stop) == (8, 16) and (ys.start, ys.stop) == (18, 26)
    ys, xs = crop_around_nodule(np.zeros((4, 50, 100), bool), (40, 40))  # no nodule: the middle
    assert (xs.start, xs.stop) == (30, 70) and (ys.start, ys.stop) == (5, 45)


def test_superres_slab_geometry_matches_thick_slice_reconstruction(tmp_path, models):
    """A thin-slice phantom averaged into slabs (the demo's and the benchmark's thick scans): the output
    grid is the thin grid again, H maps the thin phantom onto the thick slices exactly, and a run whose
    working grid (4 mm) is coarser than its output (2 mm) still ends slab-consistent."""
    from MedDiffFMLogic.controls import slab_average

    truth = make_phantom(PhantomConfig(region="abdomen", size=(28, 30, 40), spacing=(4.0, 4.0, 2.0), seed=4)).image
    truth.SetDirection(OBLIQUE)
    truth.SetOrigin((-30.0, 12.5, 40.0))
    thick = slab_average(truth, 5)
    target = superres.output_grid(thick, factor=5)
    assert ctio.same_grid(target, truth, tol=1e-9)
    H = superres._slab_operator(thick, target)
    np.testing.assert_allclose(H.apply(torch.from_numpy(ctio.to_array(truth)).double()).numpy(),
                               ctio.to_array(thick), atol=1e-3)
    model = load_model(models["base"], "cpu", models["superres"])
    result = superres.super_resolve(thick, superres.SuperresConfig(region="abdomen", factor=5, steps=2), model)
    assert ctio.same_grid(result, truth, tol=1e-9)
    np.testing.assert_allclose(H.apply(torch.from_numpy(ctio.to_array(result)).double()).numpy(),
                               ctio.to_array(thick), atol=0.05)
