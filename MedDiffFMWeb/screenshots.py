"""Screenshots of the web app with every panel, made the way a user works: a phantom CT opened, each
task run from its panel (2 sampling steps of the bundled demo models), the lesion mask painted with the
mouse. Writes small PNGs (Resources/Screenshots by default):

    python -m MedDiffFMWeb.screenshots [OUTPUT_FOLDER] [--steps 2] [--threads 2]

Needs Chromium (apt-get install chromium) and the web extra; takes about ten minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

from .browser import (
    Server, open_ct, open_page, open_panel, paint_stroke, run_and_watch, set_steps, wait_for, wait_for_view,
    write_phantom,
)

WIDTH = 1100  # pixels of the saved screenshots (the page is 1400 wide)


def save(page, path: Path) -> None:
    from PIL import Image

    for view in ("Red", "Yellow", "Green"):  # every slice view has its picture
        wait_for_view(page, view)

    image = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", flush=True)


def run_task(page, panel: str) -> None:
    open_panel(page, panel)
    before = wait_for_view(page)
    statuses, _ = run_and_watch(page)
    if not statuses[-1].startswith("Done"):
        raise SystemExit(f"{panel}: {statuses}")
    wait_for_view(page, unlike=before)
    time.sleep(5)  # the first changed picture may show only part of the result (background before overlay)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m MedDiffFMWeb.screenshots", description=__doc__.split("\n\n")[0])
    parser.add_argument("output", nargs="?", default=str(Path(__file__).resolve().parent.parent / "Resources" / "Screenshots"))
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="MedDiffFM-shots-") as tmp:
        ct = write_phantom(tmp, size="64,64,40", spacing="4.5,4.5,8")
        server = Server(tmp, threads=args.threads)
        try:
            with sync_playwright() as p:
                browser, page = open_page(p, server.url)
                open_ct(page, ct)
                wait_for_view(page)
                wait_for_view(page, "Yellow")
                set_steps(page, args.steps)
                save(page, out / "web-model-card.png")
                page.locator(".v-expansion-panel-title", has_text="Model and settings").first.click()  # closed again

                run_task(page, "Denoise")
                save(page, out / "web-denoise.png")

                run_task(page, "Anomaly map")
                save(page, out / "web-anomaly.png")

                open_panel(page, "Generate lesion")
                page.click("#mdf-new-mask")
                wait_for(lambda: server.scene()["segmentations"], message="no mask")
                page.locator("xpath=//div[@id='mdf-view-vtkMRMLSliceNodeRed']/..//img").hover()
                paint_stroke(page, length=30, dy=-20)
                wait_for(lambda: any(s["voxels"] for g in server.scene()["segmentations"] if g["name"] == "phantom mask"
                                     for s in g["segments"]), message="painting left the mask empty")
                run_task(page, "Generate lesion")
                save(page, out / "web-lesion.png")

                open_panel(page, "Inpaint lesion")
                run_task(page, "Inpaint lesion")
                save(page, out / "web-inpaint.png")

                open_panel(page, "Super-resolution")
                page.get_by_label("Factor along the slice axis").fill("2")
                run_task(page, "Super-resolution")
                save(page, out / "web-superres.png")

                # The panel only: two sampling steps of the small demo model synthesize noise, not a CT.
                open_panel(page, "Synthesize")
                for axis in "XYZ":
                    page.get_by_label(axis, exact=True).fill("48")
                save(page, out / "web-synthesize.png")
                browser.close()
        except Exception:
            print("\n".join(line for line in server.lines[-80:] if "vtk" not in line.lower()), flush=True)
            raise
        finally:
            server.stop()


if __name__ == "__main__":
    main()
