"""The web app as a user drives it: `python -m MedDiffFMWeb` serves on a free loopback port, headless
Chromium (Debian's `chromium`, driven by Playwright) opens a phantom CT, runs tasks, paints a lesion
mask and cancels a run; the scene is checked through the app's scene.json (result nodes, geometry
equal to the input's, input untouched) and the slice view's pixels through screenshots.

The engine runs in the app's child process with the bundled demo models at a tiny size and 2 steps, so
the module takes a few minutes on 2 cores. Chromium missing: skipped with the reason, except where
MEDDIFFFM_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import SimpleITK as sitk

from MedDiffFMWeb.browser import (
    RUN_TIMEOUT_S, Server, find_chromium, open_ct, open_page, open_panel, paint_stroke, run_and_watch, set_steps,
    wait_for, wait_for_view, write_phantom,
)

CHROMIUM = find_chromium()
if CHROMIUM is None:
    if os.environ.get("MEDDIFFFM_REQUIRE_BROWSER") == "1":
        raise RuntimeError("the browser tests need Chromium and MEDDIFFFM_REQUIRE_BROWSER=1: "
                           "apt-get install -y --no-install-recommends chromium (scripts/setup.sh does it)")
    pytest.skip("Chromium is not installed (apt-get install -y --no-install-recommends chromium); "
                "the browser tests cannot run", allow_module_level=True)

from playwright.sync_api import sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A small low-dose chest phantom written by the engine's CLI (the test may use the engine)."""
    return write_phantom(tmp_path_factory.mktemp("web-data"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("web-server"))
    yield s
    s.stop()
    print("\n".join(s.lines[-60:]))  # the server's log, shown when a test failed


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser, page = open_page(p, server.url, CHROMIUM)
        yield page
        browser.close()


def volume(scene: dict, node_id: str) -> dict:
    return next(v for v in scene["volumes"] if v["id"] == node_id)


def high_pass(image: np.ndarray) -> float:
    """The image's pixel-to-pixel variation (noise and edges), per pixel."""
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


def ensure_open(server, page, phantom) -> dict:
    """The phantom open as the input (each test can run alone)."""
    if server.scene()["input"] is None:
        open_ct(page, phantom)
    scene = server.scene()
    return volume(scene, scene["input"])


def watch(page) -> list[str]:
    statuses, saw_progress = run_and_watch(page)
    assert saw_progress, f"the progress bar never showed: {statuses}"
    return statuses


# ------------------------------------------------------------------------------------------- tests


def test_open_a_phantom_and_denoise_it(server, page, phantom):
    assert server.scene()["input"] is None
    open_ct(page, phantom)
    before_image = wait_for_view(page)
    scene = server.scene()
    ct = volume(scene, scene["input"])
    assert ct["name"] == "phantom" and ct["dimensions"] == [48, 48, 32]
    assert scene["slice_views"]["vtkMRMLSliceNodeRed"]["background"] == ct["id"]

    set_steps(page, 2)
    open_panel(page, "Denoise")
    statuses = watch(page)
    assert any(re.search(r"Denoise: .*\d+/\d+", s) for s in statuses), statuses  # the engine's progress reached the page
    assert statuses[-1].startswith("Done in"), statuses

    scene = server.scene()
    [result] = scene["results"]
    assert result["kind"] == "volume" and result["name"] == "phantom denoised"
    denoised = volume(scene, result["id"])
    assert denoised["dimensions"] == ct["dimensions"] and denoised["ijk_to_ras"] == ct["ijk_to_ras"]
    assert volume(scene, ct["id"])["sha256"] == ct["sha256"]  # the input is never changed
    assert denoised["sha256"] != ct["sha256"] and abs(denoised["mean"] - ct["mean"]) < 50
    assert scene["torch_imported"] is False  # the GUI process never imports torch
    assert scene["slice_views"]["vtkMRMLSliceNodeRed"]["background"] == result["id"]

    # The slice view now shows the denoised CT: the picture changed, with less pixel-to-pixel noise.
    after_image = wait_for_view(page, unlike=before_image)
    assert np.abs(after_image - before_image).mean() > 0.5
    assert high_pass(after_image) < high_pass(before_image)

    # The result downloads as NRRD with the input's grid.
    disposition, data = server.download(result["id"])
    assert "phantom_denoised.nrrd" in disposition and data.startswith(b"NRRD")


def test_paint_a_lesion_mask_and_generate_a_lesion(server, page, phantom, tmp_path):
    ct = ensure_open(server, page, phantom)
    set_steps(page, 2)
    open_panel(page, "Generate lesion")
    page.click("#mdf-new-mask")
    wait_for(lambda: server.scene()["segmentations"], message="'New mask' made no segmentation")
    [mask] = server.scene()["segmentations"]
    assert mask["reference"] == ct["id"] and [s["name"] for s in mask["segments"]] == ["lesion"]
    assert mask["segments"][0]["voxels"] == 0

    wait_for_view(page)
    centre = paint_stroke(page)
    wait_for(lambda: server.scene()["segmentations"][0]["segments"][0]["voxels"], timeout=30,
             message="painting in the slice view left the mask empty")
    painted = server.scene()["segmentations"][0]["segments"][0]["voxels"]
    assert 0 < painted < 0.05 * np.prod(ct["dimensions"])  # a brush stroke, not the whole volume
    before_image = wait_for_view(page)

    statuses = watch(page)
    assert statuses[-1].startswith("Done in"), statuses
    scene = server.scene()
    result = next(r for r in scene["results"] if r["task"] == "lesion")
    assert result["name"] == "phantom with lesion"
    lesion = volume(scene, result["id"])
    assert lesion["dimensions"] == ct["dimensions"] and lesion["ijk_to_ras"] == ct["ijk_to_ras"]
    assert lesion["sha256"] != ct["sha256"]
    assert volume(scene, ct["id"])["sha256"] == ct["sha256"]
    assert scene["segmentations"][0]["segments"][0]["voxels"] == painted  # the mask is an input too

    # Voxel by voxel (the downloads): the lesion changed the CT around the painted voxels only.
    images = {}
    for key, node_id in (("ct", ct["id"]), ("lesion", result["id"])):
        path = tmp_path / f"{key}.nrrd"
        path.write_bytes(server.download(node_id)[1])
        images[key] = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    changed = int((images["lesion"] != images["ct"]).sum())
    assert 0 < changed <= 27 * painted  # the mask and at most one voxel around it (3 mm margin, 6 mm voxels)

    # The lesion shows where it was painted: the view changes near the stroke, not far from it.
    after_image = wait_for_view(page, unlike=before_image)
    diff = np.abs(after_image - before_image)
    rows, cols = np.indices(diff.shape)
    near = (np.abs(rows - centre[1]) < 60) & (np.abs(cols - centre[0]) < 80)
    assert diff[near].mean() > 3 * diff[~near].mean() and diff[near].mean() > 1.0


def test_cancel_a_run(server, page):
    scene = server.scene()
    open_panel(page, "Synthesize")
    set_steps(page, 500)
    page.click("#mdf-apply")
    # Wait until the engine reports sampling steps, then cancel.
    page.wait_for_function("/Synthesize: .*[1-9][0-9]*\\/500/.test(document.querySelector('#mdf-status').innerText)",
                           timeout=RUN_TIMEOUT_S * 1000)
    assert server.engine_processes(), "no engine process while a run is going"
    page.click("#mdf-cancel")
    page.wait_for_function("document.querySelector('#mdf-status').innerText.startsWith('Cancelled')")
    assert page.locator("#mdf-apply").is_enabled() and not page.locator("#mdf-cancel").is_enabled()
    wait_for(lambda: not server.engine_processes(), timeout=15, message="the engine outlived Cancel")
    after = server.scene()
    assert [v["id"] for v in after["volumes"]] == [v["id"] for v in scene["volumes"]]
    assert after["results"] == scene["results"] and after["running"] is False
    set_steps(page, 2)


def test_upload_a_ct(server, page, phantom):
    before = server.scene()
    page.set_input_files("#mdf-upload", str(phantom))
    wait_for(lambda: len(server.scene()["volumes"]) > len(before["volumes"]), message="the upload added no volume")
    scene = server.scene()
    [uploaded] = [v for v in scene["volumes"] if v["id"] not in {b["id"] for b in before["volumes"]}]
    assert uploaded["name"].startswith("phantom") and scene["input"] == uploaded["id"]
    originals = [v for v in before["volumes"] if v["name"] == "phantom"]
    if originals:  # the same file opened from the server's disk earlier: same voxels, same grid
        assert uploaded["sha256"] == originals[0]["sha256"] and uploaded["ijk_to_ras"] == originals[0]["ijk_to_ras"]
    assert page.inner_text("#mdf-status").startswith("Opened")


def test_the_server_listens_on_loopback_only(server):
    import psutil

    listening = [c.laddr for c in psutil.Process(server.process.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(address.ip == "127.0.0.1" for address in listening), listening
