"""Robustness (issue 7): values implausible for a CT refused unless forced, masks at the border or with
any single label value, interrupted runs (SIGINT, SIGTERM) leave nothing behind, and property tests
for label-map geometry and for masks resampled onto the image grid."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from MedDiffFMLogic import ctio
from MedDiffFMLogic.cli import main
from MedDiffFMLogic.errors import InputError
from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom
from MedDiffFMLogic.tasks.masks import read_mask
from test_ctio import write_dicom_series

ROOT = Path(__file__).resolve().parents[1]


def _phantom(region: str = "chest", size=(24, 24, 12), spacing=(8.0, 8.0, 12.0)) -> sitk.Image:
    return make_phantom(PhantomConfig(region=region, size=size, spacing=spacing, seed=1)).image


def _save(image: sitk.Image, path: Path) -> Path:
    # SimpleITK directly, not ctio.write_image: files this process wrote through ctio count as results
    # and are read back without the HU check.
    sitk.WriteImage(image, str(path))
    return path


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


# ------------------------------------------------------------------------------- plausible HU


def _padded(padding: float, metal: float = 30000.0) -> sitk.Image:
    """A scanner-style int16 CT: the field of view is a cylinder, outside it the padding value, and one
    metal voxel at the top of the extended HU scale."""
    image = _phantom("abdomen")
    array = sitk.GetArrayFromImage(image)
    _, y, x = np.indices(array.shape)
    outside = (y - array.shape[1] / 2) ** 2 + (x - array.shape[2] / 2) ** 2 > (array.shape[2] / 2) ** 2
    array[:, outside[0]] = padding
    array[6, 12, 12] = metal
    return _like(array.astype(np.int16), image)


PLAUSIBLE = {
    "head_neck phantom": lambda: _phantom("head_neck"),
    "chest phantom": lambda: _phantom("chest"),
    "abdomen phantom": lambda: _phantom("abdomen"),
    "int16, padding -3024": lambda: _padded(-3024),
    "int16, padding -2048": lambda: _padded(-2048),
    "int16, padding -32768": lambda: _padded(-32768),
    # A crop inside the body (fat and soft tissue, no air) is still a CT.
    "soft-tissue crop": lambda: _like(
        np.random.default_rng(0).uniform(-120, 80, (10, 12, 14)).astype(np.float32), _phantom()[:14, :12, :10]),
}


@pytest.mark.parametrize("case", list(PLAUSIBLE))
def test_real_ct_values_pass_the_hu_check(tmp_path, case):
    image = PLAUSIBLE[case]()
    for ext in (".nrrd", ".nii.gz"):
        back = ctio.read_ct(_save(image, tmp_path / f"ct{ext}"))
        np.testing.assert_array_equal(ctio.to_array(back), sitk.GetArrayViewFromImage(image).astype(np.float32))


def test_a_dicom_series_with_padding_and_metal_passes_the_hu_check(tmp_path):
    hu = _padded(-3024)
    hu.SetSpacing((0.8, 0.8, 2.0))
    write_dicom_series(tmp_path / "series", hu, "1.2.826.0.1.3680043.2.1125.77")
    values = ctio.to_array(ctio.read_ct(tmp_path / "series"))
    assert values.min() == -3024 and values.max() == 30000


def _mr_like() -> sitk.Image:
    """Magnitude MR: non-negative, tissue a few hundred to a few thousand, stored as uint16."""
    ct = _phantom("head_neck")
    body = sitk.GetArrayViewFromImage(ct) > -500
    rng = np.random.default_rng(1)
    array = np.where(body, rng.uniform(300, 4000, body.shape), rng.rayleigh(20, body.shape))
    return _like(array.astype(np.uint16), ct)


def _scaled(ct: sitk.Image, lo: float, hi: float, dtype) -> sitk.Image:
    array = sitk.GetArrayViewFromImage(ct).astype(np.float64)
    unit = (array - array.min()) / (array.max() - array.min())
    return _like((lo + unit * (hi - lo)).astype(dtype), ct)


IMPLAUSIBLE = {
    "MR, uint16": (_mr_like, "no voxel lies below -100"),
    "normalised to [0, 1]": (lambda: _scaled(_phantom(), 0, 1, np.float32), "no voxel lies below -100"),
    "normalised to [-1, 1]": (lambda: _scaled(_phantom(), -1, 1, np.float32), "no voxel lies below -100"),
    "8-bit export": (lambda: _scaled(_phantom(), 0, 255, np.uint8), "8 bits"),
    "8-bit export as float": (lambda: _scaled(_phantom(), 0, 255, np.float32), "no voxel lies below -100"),
    # The stored values of a CT without its rescale intercept: air at 0, water at 1024.
    "CT without intercept": (lambda: _scaled(_phantom(), 24, 2400, np.uint16), "no voxel lies below -100"),
    "values beyond any CT": (lambda: _scaled(_phantom(), -1000, 2e6, np.float32), "beyond any CT"),
}


@pytest.mark.parametrize("case", list(IMPLAUSIBLE))
def test_values_implausible_for_ct_are_refused_unless_allowed(tmp_path, case):
    make, reason = IMPLAUSIBLE[case]
    image = make()
    path = _save(image, tmp_path / "scan.nrrd")
    with pytest.raises(InputError, match=reason) as raised:
        ctio.read_ct(path)
    message = str(raised.value)
    assert str(path) in message and "Hounsfield" in message and "--force" in message
    with ctio.allow_unusual_hu(), pytest.warns(UserWarning, match="--force was given"):
        back = ctio.read_ct(path)
    np.testing.assert_array_equal(ctio.to_array(back), sitk.GetArrayViewFromImage(image).astype(np.float32))
    with pytest.raises(InputError):  # the permission ends with the block
        ctio.read_ct(path)


def test_a_result_is_read_without_the_hu_check_only_when_the_caller_says_so(tmp_path):
    # A task's own output (e.g. an anomaly map: non-negative HU differences) is read back by the demo,
    # which says it reads a result; who wrote the file (this process or another) changes nothing.
    heat = _scaled(_phantom(), 0, 300, np.float32)
    path = ctio.write_image(heat, tmp_path / "map.nrrd")
    assert ctio.same_grid(ctio.read_ct(path, check_hu=False), heat)
    with pytest.raises(InputError, match="Hounsfield"):
        ctio.read_ct(path)


def test_the_cli_refuses_an_mr_and_runs_it_with_force(tmp_path, tiny_model_card, capsys):
    mr = _mr_like()
    mr.SetSpacing((8.0, 8.0, 8.0))
    scan = _save(mr, tmp_path / "mr.nii.gz")
    out = tmp_path / "out.nii.gz"
    argv = ["denoise", str(scan), "-o", str(out), "--model", str(tiny_model_card), "--steps", "1",
            "--noise-level", "20", "--device", "cpu", "--progress", "json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    error = _json_lines(captured.out)[-1]
    assert error["stage"] == "error" and "Hounsfield" in error["error"] and "--force" in error["error"]
    assert "Traceback" not in captured.err and not out.exists()

    assert main([*argv, "--force"]) == 0
    captured = capsys.readouterr()
    assert _json_lines(captured.out)[-1]["stage"] == "done" and out.exists()
    assert "meddifffm: warning:" in captured.err and "--force was given" in captured.err
    # The Slicer widget recognises this refusal by its wording and offers to run anyway.
    tree = ast.parse((ROOT / "MedDiffFM" / "MedDiffFM.py").read_text())
    [marker] = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
                and any(getattr(t, "id", None) == "UNUSUAL_HU" for t in n.targets)]
    assert marker in error["error"]


def test_running_out_of_ram_is_a_message_not_a_traceback(tmp_path, capsys):
    # 100000^3 voxels: numpy refuses at once (3.55 PiB exceeds any address space), nothing is allocated.
    out = tmp_path / "huge.nii.gz"
    assert main(["phantom", "-o", str(out), "--size", "100000,100000,100000", "--progress", "json"]) == 1
    captured = capsys.readouterr()
    error = _json_lines(captured.out)[-1]
    assert error["stage"] == "error" and error["error"].startswith("out of memory") and "crop" in error["error"]
    assert "Traceback" not in captured.err and not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- masks


def _mask_file(folder: Path, array: np.ndarray, reference: sitk.Image, name: str) -> Path:
    return ctio.write_image(_like(array.astype(np.uint8), reference), folder / f"{name}.nrrd")


def test_a_mask_with_one_label_of_any_value_is_binary(tmp_path):
    image = _phantom()
    array = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint8)
    array[4:8, 8:14, 9:15] = 255  # the usual value of 8-bit tools
    mask = read_mask(_mask_file(tmp_path, array, image, "m255"), image)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, array > 0)


def test_a_mask_touching_the_border_is_used_with_a_warning(tmp_path):
    image = _phantom()
    shape = sitk.GetArrayViewFromImage(image).shape
    inside = np.zeros(shape, np.uint8)
    inside[4:8, 8:14, 9:15] = 1
    with _no_warnings():
        read_mask(_mask_file(tmp_path, inside, image, "inside"), image)

    edge = np.zeros(shape, np.uint8)
    edge[4:8, 8:14, -3:] = 1  # reaches the last x slice
    with pytest.warns(UserWarning, match=r"touches the image border \(the last x slices\)"):
        mask = read_mask(_mask_file(tmp_path, edge, image, "edge"), image)
    np.testing.assert_array_equal(mask, edge > 0)

    # Drawn on a grid shifted by 12 voxels along x (x 21..26 of 24): the part beyond the scan is dropped, with the warning.
    shifted = _like(inside, image)
    shifted.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((12.0, 0.0, 0.0)))
    path = ctio.write_image(shifted, tmp_path / "shifted.nrrd")
    wide = np.zeros(shape, np.uint8)
    wide[4:8, 8:14, 21:] = 1
    with pytest.warns(UserWarning, match="touches the image border.*outside the scan is ignored"):
        mask = read_mask(path, image)
    np.testing.assert_array_equal(mask, wide > 0)


@contextlib.contextmanager
def _no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------------------------------- interrupted runs


def _engine(args: list[str], sigint: bool = False) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # A child started from a shell's background job inherits SIGINT ignored, and Python then never turns
    # SIGINT into KeyboardInterrupt: give it the default disposition, as a terminal would.
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if sigint else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "MedDiffFMLogic", *args, "--progress", "json", "--device", "cpu"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=pre,
    )
    watchdog = threading.Timer(240, proc.kill)  # never let a stuck engine hang the suite
    watchdog.daemon = True
    watchdog.start()
    return proc


def _assert_nothing_left(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == []


def test_sigint_during_sampling_exits_130_with_an_error_line_and_no_output(tmp_path, tiny_model_card):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = _engine(["synthesize", "-o", str(out_dir / "synth.nii.gz"), "--size", "24,24,24",
                    "--model", str(tiny_model_card), "--steps", "400"], sigint=True)
    lines = []
    for line in proc.stdout:  # wait until sampling is under way: torch loaded, model on the device
        lines += _json_lines(line)
        if lines and lines[-1].get("stage") == "synthesize" and lines[-1].get("step", 0) >= 1:
            break
    else:
        pytest.fail(f"the engine ended before sampling: {proc.stderr.read()}")
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = _json_lines(rest)[-1]
    assert last["stage"] == "error" and "interrupted (SIGINT)" in last["error"]
    assert "Traceback" not in err and "interrupted (SIGINT)" in err
    _assert_nothing_left(out_dir)


def test_sigterm_while_the_output_is_written_leaves_neither_output_nor_temporary_file(tmp_path, tiny_model_card):
    """SIGTERM (`kill`, Slicer's Cancel) lands while SimpleITK writes the hidden temporary file: the
    run exits 143 with an error line, the temporary file is removed and no output appears."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # 2 sampling steps on the model's 4 mm grid, then a 200^3 float volume (32 MB) resampled and
    # gzip-written: seconds of writing to land in.
    proc = _engine(["synthesize", "-o", str(out_dir / "synth.nii.gz"), "--size", "200,200,200",
                    "--spacing", "0.6,0.6,0.6", "--model", str(tiny_model_card), "--steps", "2"])
    stdout: list[str] = []
    reader = threading.Thread(target=lambda: stdout.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 180
    while not list(out_dir.glob(".synth.tmp-*")):
        assert proc.poll() is None, f"the engine ended before writing: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no temporary output within 3 minutes"
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    reader.join(10)
    err = proc.stderr.read()  # a few lines: the pipe could not fill up while we waited
    assert proc.returncode == 143, err
    last = _json_lines("".join(stdout))[-1]
    assert last["stage"] == "error" and "interrupted (SIGTERM)" in last["error"]
    assert "Traceback" not in err
    _assert_nothing_left(out_dir)


# ------------------------------------------------------------------------------- geometry properties


def _rotation(quaternion) -> np.ndarray:
    w, x, y, z = np.asarray(quaternion) / np.linalg.norm(quaternion)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


_unit = st.floats(-1.0, 1.0)
_quaternion = st.tuples(_unit, _unit, _unit, _unit).filter(lambda q: np.linalg.norm(q) > 0.1)
_flips = st.tuples(*[st.sampled_from([1.0, -1.0])] * 3)
# NIfTI keeps geometry as float32 (see ctio's docstring); the other writers keep it exactly.
_TOLERANCE = {".nii": 1e-6, ".nii.gz": 1e-6, ".nrrd": 1e-12, ".mha": 1e-12}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    spacing=st.tuples(*[st.floats(0.2, 8.0)] * 3),
    quaternion=_quaternion,
    flips=_flips,
    origin=st.tuples(*[st.floats(-2000.0, 2000.0)] * 3),
)
def test_label_maps_keep_any_geometry_through_every_writer(spacing, quaternion, flips, origin):
    # test_ctio checks CT images through .nrrd, .mha and .nii.gz; this adds .nii and label maps.
    labels = (np.arange(4 * 5 * 6).reshape(6, 5, 4) % 4).astype(np.uint8)
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection((_rotation(quaternion) @ np.diag(flips)).ravel().tolist())
    with tempfile.TemporaryDirectory() as folder:
        for ext in ctio.WRITE_FORMATS:
            back = ctio.read_label_map(ctio.write_image(image, os.path.join(folder, f"l{ext}")))
            tol = _TOLERANCE[ext]
            assert back.GetSize() == image.GetSize() and back.GetPixelID() == sitk.sitkUInt8
            np.testing.assert_allclose(back.GetSpacing(), spacing, rtol=tol, atol=0)
            np.testing.assert_allclose(back.GetOrigin(), origin, rtol=0, atol=tol * max(1.0, np.abs(origin).max()))
            np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), rtol=0, atol=tol)
            np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), labels)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    image_spacing=st.tuples(*[st.floats(0.5, 3.0)] * 3),
    mask_spacing=st.tuples(*[st.floats(0.3, 4.0)] * 3),
    widths=st.tuples(*[st.floats(1.5, 4.0)] * 3),  # the mask's extent, in image voxels
    starts=st.tuples(*[st.floats(1.5, 3.0)] * 3),  # where it begins, in image voxels
    first=st.tuples(*[st.integers(0, 3)] * 3),  # the mask's first voxel in its own grid
    quaternion=_quaternion,
    origin=st.tuples(*[st.floats(-500.0, 500.0)] * 3),
)
# Found by this test: subnormal direction cosines (1e-308) made ITK's SVD fail and the mask land outside.
@example(image_spacing=(1.0, 1.0, 1.0), mask_spacing=(1.0, 1.0, 1.0), widths=(2.0, 2.0, 2.0),
         starts=(2.0, 2.0, 2.0), first=(0, 0, 0), quaternion=(0.5, 1.0, 0.0, 1.1125369292536007e-308),
         origin=(0.0, 0.0, 0.0))
# Also found by it: normal but tiny cosines (1e-297) fail the same SVD, because their squares underflow.
@example(image_spacing=(1.0, 1.0, 1.0), mask_spacing=(1.06, 1.5, 1.5), widths=(2.0, 2.0, 2.0),
         starts=(2.0, 2.0, 2.0), first=(0, 0, 0), quaternion=(0.0, 0.40625, 0.1, 3.4044952969173736e-298),
         origin=(0.0, 0.0, 0.0))
def test_a_mask_resampled_onto_the_image_grid_keeps_its_physical_extent(
    image_spacing, mask_spacing, widths, starts, first, quaternion, origin,
):
    """A mask drawn on another grid (another spacing and origin, the scan's orientation, as the Segment
    Editor makes them) lands on the image grid covering the same millimetres, within one image voxel
    at each end, along every axis."""
    direction = _rotation(quaternion)
    s_i, s_m = np.asarray(image_spacing), np.asarray(mask_spacing)
    count = np.maximum(1, np.round(np.asarray(widths) * s_i / s_m)).astype(int)  # mask voxels per axis
    first = np.asarray(first)
    # Along each axis (shared orientation): image index = (mask index - first + 0.5) * s_m / s_i + start - 0.5,
    # so the mask's first voxel begins at image continuous index start - 0.5.
    mask_origin = np.asarray(origin) + direction @ ((np.asarray(starts) - 0.5) * s_i - (first - 0.5) * s_m)
    lo = np.asarray(starts) - 0.5  # the mask's extent in image continuous index (voxel edges)
    hi = lo + count * s_m / s_i
    image_size = np.ceil(hi + 2).astype(int)

    image = sitk.Image([int(n) for n in image_size], sitk.sitkFloat32)
    image.SetSpacing(image_spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction.ravel().tolist())
    mask_size = first + count + 2
    array = np.zeros(mask_size[::-1], np.uint8)
    array[first[2]:first[2] + count[2], first[1]:first[1] + count[1], first[0]:first[0] + count[0]] = 1
    mask = sitk.GetImageFromArray(array)
    mask.SetSpacing(mask_spacing)
    mask.SetOrigin(mask_origin.tolist())
    mask.SetDirection(direction.ravel().tolist())

    with tempfile.TemporaryDirectory() as folder, _no_warnings():  # inside the image: no border warning
        on_grid = read_mask(ctio.write_image(mask, os.path.join(folder, "mask.nrrd")), image)
    # Each image voxel whose centre lies inside [lo, hi] on every axis is in, each whose centre lies
    # outside is out; centres on an edge (a tie, decided by rounding) may go either way.
    eps = 1e-6
    centres = np.indices(on_grid.shape)[::-1].reshape(3, -1).T  # (x, y, z) per voxel, z-major order
    inside = np.all((centres > lo + eps) & (centres < hi - eps), axis=1)
    outside = np.any((centres < lo - eps) | (centres > hi + eps), axis=1)
    kept = on_grid.ravel()
    assert kept[inside].all() and not kept[outside].any()
    # Hence each end of the extent is kept within one image voxel.
    where = np.argwhere(on_grid)[:, ::-1]
    assert np.all(np.abs(where.min(axis=0) - lo) <= 1 + eps) and np.all(np.abs(hi - where.max(axis=0)) <= 1 + eps)

