"""The web app as a user drives it: `python -m MedDiffFMWeb` serves on a free loopback port, headless
Chromium (Debian's `chromium`, driven by Playwright) opens a phantom CT, runs tasks, paints a lesion
mask and cancels a run; the scene is checked through the app's scene.json (result nodes, geometry
equal to the input's, input untouched) and the slice view's pixels through screenshots.

The engine runs in the app's child process with the bundled demo models at a tiny size and 2 steps, so
the module takes a few minutes on 2 cores. Chromium missing: skipped with the reason, except where
MEDDIFFFM_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MEDDIFFFM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("MEDDIFFFM_REQUIRE_BROWSER") == "1":
        raise RuntimeError("the browser tests need Chromium and MEDDIFFFM_REQUIRE_BROWSER=1: "
                           "apt-get install -y --no-install-recommends chromium (scripts/setup.sh does it)")
    pytest.skip("Chromium is not installed (apt-get install -y --no-install-recommends chromium); "
                "the browser tests cannot run", allow_module_level=True)

from PIL import Image  # noqa: E402  (trame-slicer's dependency)
from playwright.sync_api import sync_playwright  # noqa: E402

SERVER_START_S = 180
RUN_TIMEOUT_S = 300


# ------------------------------------------------------------------------------------------ fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    """A small low-dose chest phantom written by the engine's CLI (the test may use the engine)."""
    folder = tmp_path_factory.mktemp("web-data")
    ct = folder / "phantom.nrrd"
    subprocess.run([sys.executable, "-m", "MedDiffFMLogic", "phantom", "--region", "chest", "-o", str(folder / "full.nrrd"),
                    "--size", "48,48,32", "--spacing", "6,6,8", "--low-dose", str(ct), "--seed", "3",
                    "--progress", "none"], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, timeout=300)
    return ct


class Server:
    def __init__(self, tmp: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MedDiffFMWeb", "--port", str(self.port), "--temp-dir", str(tmp)],
            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + SERVER_START_S
        while not any("serving on" in line for line in self.lines):
            assert self.process.poll() is None, "the server died:\n" + "\n".join(self.lines[-30:])
            assert time.monotonic() < deadline, "the server did not start:\n" + "\n".join(self.lines[-30:])
            time.sleep(0.2)

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def scene(self) -> dict:
        with urllib.request.urlopen(self.url + "meddifffm/scene.json", timeout=60) as r:
            return json.load(r)

    def download(self, node_id: str) -> tuple[str, bytes]:
        with urllib.request.urlopen(self.url + f"meddifffm/download/{node_id}", timeout=60) as r:
            return r.headers.get("Content-Disposition", ""), r.read()

    def engine_processes(self) -> list:
        import psutil

        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self):
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("web-server"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def page(server):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        page.goto(server.url)
        page.wait_for_selector("#mdf-apply")
        yield page
        browser.close()


# ------------------------------------------------------------------------------------------ helpers


def view_image(page, view: str = "Red") -> np.ndarray:
    """The slice view's image as the browser shows it (grey levels, float)."""
    image = page.locator(f"xpath=//div[@id='mdf-view-vtkMRMLSliceNode{view}']/..//img[contains(@class, 'image-display-area')]")
    png = image.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def wait_for_view(page, view: str = "Red", unlike: np.ndarray | None = None, timeout: float = 90) -> np.ndarray:
    """The view's image once it shows something (not black), and differs from `unlike` when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            image = view_image(page, view)
        except Exception:  # the image has no size yet
            image = None
        if image is not None and image.std() > 5 and (unlike is None or image.shape != unlike.shape
                                                       or np.abs(image - unlike).mean() > 0.5):
            return image
        assert time.monotonic() < deadline, f"the {view} slice view did not show the expected image"
        time.sleep(1)


def open_panel(page, title: str) -> None:
    header = page.locator(".v-expansion-panel-title", has_text=title).first
    if "v-expansion-panel-title--active" not in (header.get_attribute("class") or ""):
        header.click()


def set_steps(page, steps: int) -> None:
    open_panel(page, "Model and settings")
    page.fill("#mdf-steps", str(steps))


def run_and_watch(page, server, timeout: float = RUN_TIMEOUT_S) -> list[str]:
    """Click Apply and record the status line while the progress bar shows, until the run ends."""
    previous = page.inner_text("#mdf-status")
    page.click("#mdf-apply")
    # The previous run's "Done ..." stays until the server answers the click.
    page.wait_for_function(f"document.querySelector('#mdf-status').innerText !== {json.dumps(previous)}")
    statuses, deadline = [], time.monotonic() + timeout
    saw_progress = False
    while True:
        status = page.inner_text("#mdf-status")
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        saw_progress |= page.locator("#mdf-progress").is_visible()
        if page.locator("#mdf-error").count():
            pytest.fail(f"the run failed: {page.inner_text('#mdf-error')} ({statuses})")
        if re.match(r"(Done|Failed|Cancelled)", status):
            break
        assert time.monotonic() < deadline, f"the run did not end: {statuses}"
        time.sleep(0.3)
    assert saw_progress, f"the progress bar never showed: {statuses}"
    return statuses


def volume(scene: dict, node_id: str) -> dict:
    return next(v for v in scene["volumes"] if v["id"] == node_id)


def high_pass(image: np.ndarray) -> float:
    """The image's pixel-to-pixel variation (noise and edges), per pixel."""
    return float(np.abs(np.diff(image, axis=0)).mean() + np.abs(np.diff(image, axis=1)).mean())


# ------------------------------------------------------------------------------------------- tests


def test_open_a_phantom_and_denoise_it(server, page, phantom):
    assert server.scene()["input"] is None
    page.fill("#mdf-path", str(phantom))
    page.click("#mdf-open")
    page.wait_for_function("document.querySelector('#mdf-status').innerText.startsWith('Opened')")
    before_image = wait_for_view(page)
    scene = server.scene()
    ct = volume(scene, scene["input"])
    assert ct["name"] == "phantom" and ct["dimensions"] == [48, 48, 32]
    assert scene["slice_views"]["vtkMRMLSliceNodeRed"]["background"] == ct["id"]

    set_steps(page, 2)
    open_panel(page, "Denoise")
    statuses = run_and_watch(page, server)
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


def ensure_open(server, page, phantom) -> dict:
    """The phantom open as the input (each test can run alone)."""
    scene = server.scene()
    if scene["input"] is None:
        page.fill("#mdf-path", str(phantom))
        page.click("#mdf-open")
        page.wait_for_function("document.querySelector('#mdf-status').innerText.startsWith('Opened')")
        scene = server.scene()
    return volume(scene, scene["input"])


def paint_stroke(page, view: str = "Red", length: int = 40) -> tuple[float, float]:
    """Drag the mouse across the middle of a slice view, as a user paints; returns the stroke's centre
    in the view image's pixels."""
    image = page.locator(f"xpath=//div[@id='mdf-view-vtkMRMLSliceNode{view}']/..//img[contains(@class, 'image-display-area')]")
    box = image.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - length / 2, cy)
    page.mouse.down()
    for step in range(11):
        page.mouse.move(cx - length / 2 + length * step / 10, cy)
        time.sleep(0.1)
    page.mouse.up()
    return box["width"] / 2, box["height"] / 2


def wait_for(predicate, timeout: float = 60, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, message
        time.sleep(0.5)


def test_paint_a_lesion_mask_and_generate_a_lesion(server, page, phantom):
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

    statuses = run_and_watch(page, server)
    assert statuses[-1].startswith("Done in"), statuses
    scene = server.scene()
    result = next(r for r in scene["results"] if r["task"] == "lesion")
    assert result["name"] == "phantom with lesion"
    lesion = volume(scene, result["id"])
    assert lesion["dimensions"] == ct["dimensions"] and lesion["ijk_to_ras"] == ct["ijk_to_ras"]
    assert lesion["sha256"] != ct["sha256"]
    assert volume(scene, ct["id"])["sha256"] == ct["sha256"]
    assert scene["segmentations"][0]["segments"][0]["voxels"] == painted  # the mask is an input too

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
