"""Driving the web app as a user does: the server in its own process on a free loopback port, and
headless Chromium (the system's, through Playwright) clicking the page. The browser tests
(Testing/test_web.py) and the screenshot maker (screenshots.py) use it; the app itself never imports it.
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

SERVER_START_S = 180
RUN_TIMEOUT_S = 300
VIEWPORT = {"width": 1400, "height": 900}


class BrowserError(RuntimeError):
    """The page did not do what the user expected (the message says what and shows the status)."""


def find_chromium() -> str | None:
    return os.environ.get("MEDDIFFFM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m MedDiffFMWeb` on a free port of 127.0.0.1, with its scene.json and downloads."""

    def __init__(self, workdir: str | os.PathLike, threads: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        # The engine inherits this environment: one thread keeps a test from taking every core.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "MedDiffFMWeb", "--port", str(self.port), "--temp-dir", str(workdir)],
            cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + SERVER_START_S
        while not any("serving on" in line for line in self.lines):
            if self.process.poll() is not None:
                raise BrowserError("the server died:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                self.stop()
                raise BrowserError("the server did not start:\n" + "\n".join(self.lines[-30:]))
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

        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self):
        import psutil

        children = self.engine_processes()
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


def open_page(playwright, url: str, chromium: str | None = None):
    """A headless Chromium page on the app, once the panel is there. Returns (browser, page)."""
    browser = playwright.chromium.launch(executable_path=chromium or find_chromium(), args=["--no-sandbox"])
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(60_000)
    page.goto(url)
    page.wait_for_selector("#mdf-apply")
    return browser, page


# ----------------------------------------------------------------------------------------- the page


def view_locator(page, view: str = "Red"):
    return page.locator(f"xpath=//div[@id='mdf-view-vtkMRMLSliceNode{view}']/..//img[contains(@class, 'image-display-area')]")


def view_image(page, view: str = "Red") -> np.ndarray:
    """The slice view's image as the browser shows it (grey levels, float)."""
    from PIL import Image

    png = view_locator(page, view).screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def wait_for_view(page, view: str = "Red", unlike: np.ndarray | None = None, timeout: float = 90) -> np.ndarray:
    """The view's image once it shows something (not black), and differs from `unlike` when given."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            image = view_image(page, view)
        except Exception:  # noqa: BLE001  (the image has no size yet)
            image = None
        if image is not None and image.std() > 5 and (unlike is None or image.shape != unlike.shape
                                                       or np.abs(image - unlike).mean() > 0.5):
            return image
        if time.monotonic() > deadline:
            raise BrowserError(f"the {view} slice view did not show the expected image")
        time.sleep(1)


def status(page) -> str:
    return page.inner_text("#mdf-status")


def open_ct(page, path: str | os.PathLike) -> None:
    page.fill("#mdf-path", str(path))
    page.click("#mdf-open")
    page.wait_for_function("document.querySelector('#mdf-status').innerText.startsWith('Opened')")


def open_panel(page, title: str) -> None:
    """Open a panel by its title; for a task panel, wait until the server has made it the task (the
    Apply button names it), so that a click on Apply right after runs this task."""
    header = page.locator(".v-expansion-panel-title", has_text=title).first
    if "v-expansion-panel-title--active" not in (header.get_attribute("class") or ""):
        header.click()
    if title != "Model and settings":
        page.wait_for_function(f"document.querySelector('#mdf-apply').textContent.includes({json.dumps(title)})")


def set_steps(page, steps: int) -> None:
    open_panel(page, "Model and settings")
    page.fill("#mdf-steps", str(steps))


def run_and_watch(page, timeout: float = RUN_TIMEOUT_S) -> tuple[list[str], bool]:
    """Click Apply and record the status line until the run ends: (statuses, progress bar seen)."""
    previous = status(page)
    page.click("#mdf-apply")
    # The previous run's "Done ..." stays until the server answers the click.
    page.wait_for_function(f"document.querySelector('#mdf-status').innerText !== {json.dumps(previous)}"
                           " || document.querySelector('#mdf-error') !== null")
    statuses, deadline, saw_progress = [], time.monotonic() + timeout, False
    while True:
        text = status(page)
        if not statuses or statuses[-1] != text:
            statuses.append(text)
        saw_progress |= page.locator("#mdf-progress").is_visible()
        if page.locator("#mdf-error").count():
            raise BrowserError(f"the run failed: {page.inner_text('#mdf-error')} ({statuses})")
        if re.match(r"(Done|Failed|Cancelled)", text):
            return statuses, saw_progress
        if time.monotonic() > deadline:
            raise BrowserError(f"the run did not end: {statuses}")
        time.sleep(0.3)


def paint_stroke(page, view: str = "Red", length: int = 40, dy: float = 0.0) -> tuple[float, float]:
    """Drag the mouse across the middle of a slice view (`dy` pixels below it), as a user paints;
    returns the stroke's centre in the view image's pixels."""
    box = view_locator(page, view).bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 + dy
    page.mouse.move(cx - length / 2, cy)
    page.mouse.down()
    for step in range(11):
        page.mouse.move(cx - length / 2 + length * step / 10, cy)
        time.sleep(0.1)
    page.mouse.up()
    return box["width"] / 2, box["height"] / 2 + dy


def wait_for(predicate, timeout: float = 60, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise BrowserError(message or "timed out")
        time.sleep(0.5)


def write_phantom(folder: str | os.PathLike, size: str = "48,48,32", spacing: str = "6,6,8", seed: int = 3) -> Path:
    """A small low-dose chest phantom CT written by the engine's CLI (in its own process)."""
    folder = Path(folder)
    ct = folder / "phantom.nrrd"
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "MedDiffFMLogic", "phantom", "--region", "chest", "-o", str(folder / "full.nrrd"),
                    "--size", size, "--spacing", spacing, "--low-dose", str(ct), "--seed", str(seed),
                    "--progress", "none"], check=True, cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   capture_output=True, timeout=600)
    return ct
