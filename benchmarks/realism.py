"""Realism of the procedural phantoms: their statistics against real CT, region by region.

    .venv/bin/python benchmarks/realism.py [--generator-commit REV] [--figures docs/images] [--quick]
    .venv/bin/python benchmarks/realism.py --table OLD.json NEW.json   # a Markdown table, old against new
    .venv/bin/python benchmarks/realism.py --scanner-noise   # the scanner's noise levels (seeds/scanner.md)

Prints one JSON document (also written to --output, by default benchmarks/results/realism.json, or
realism_<REV>.json with --generator-commit). The phantoms come from the working tree, or from the
engine as it was at a git revision (extracted into a temporary folder and run in a subprocess), so
today's phantoms and earlier ones are measured the same way. Each phantom is scanned by its own
generator's scanner at full dose (its simulate_low_dose, dose 1.0) with the reference's slice
thickness: real scans carry noise, so the comparison is of scans with scans.

Real references (measurement only; never trained on, never committed; read at run time):
- head (3D): Debian's invesalius-examples, Cranium.inv3 (GPL-2): 108 x 256 x 256 at 0.957 x 0.957 x
  1.5 mm, vertex to maxilla. Compared with the top 162 mm of the head_neck phantom at the same grid.
  matrix.dat holds axial planes along its first axis (main.plist's "orientation" is 1, but the planes
  are axial: the 1.5 mm axis spans 160 mm from the vertex to the maxilla, and its middle plane shows the
  lateral ventricles and the frontal sinus with the head holder behind; see docs/images/realism_head.png).
- chest: dicompyler-core's sdist, tests/testdata/example_data/ct.0.dcm (1.074 mm, 3 mm slice), the top
  slice of a breast radiotherapy plan: the thoracic inlet (trachea, shoulders, one arm raised), no lung;
  against the chest phantom's first slice above its lung apices. The lungs are measured on the phantom's
  slice through the middle of the heart against the target range (no real lung slice ships in a package).
Not used: pydicom-data's bad_sequence.dcm ("NECK": a 147 mm field of view around a vertebra, which cuts
the body) and the 5 mm head slice 693_*.dcm (the 3D head covers the head).
- abdomen: pydicom-data's explicit_VR-UN.dcm (0.859 mm, pancreas level; slice thickness not stored,
  2.5 mm assumed); against the abdomen phantom's slice where the pancreas is largest.
Missing references are skipped (the JSON says why). Install: `apt-get install invesalius-examples`,
`pip install pydicom-data`; dicompyler-core's sdist is fetched with `pip download` into the cache
folder (--cache, default ~/.cache/meddifffm/realism) unless --no-download.

Statistics (each a distance, smaller = closer to the real scan), all in-plane on the same pixel size:
- hu_w1: Wasserstein-1 distance (HU) between the HU histograms inside the body (the largest
  connected component above -400 HU after a 3 mm opening, holes filled per slice).
- gradient_w1: Wasserstein-1 distance (HU/mm) between in-plane gradient magnitudes inside the body
  eroded by 3 mm (edges, texture and noise together).
- nps_w1: Wasserstein-1 distance (lp/mm) between the shapes of the soft-tissue noise power spectra:
  radially averaged 2D spectra of 24 x 24 pixel patches lying wholly in homogeneous soft tissue (mean
  -150..150 HU, SD of the image smoothed at 3 mm at most 15 HU; detrended by a plane), normalised to
  unit sum; also the patches' SD (HU), i.e. the noise plus fine texture, for reference.
- lung_vessel_fraction (chest phantom at mid-heart): fraction of lung (the air-filled region inside the
  body, closed by 5 mm and filled, less a 2 mm rim) above -500 HU; target 3-15 % (real CT at 1-3 mm);
  the distance is how far it lies outside that range (0 inside).
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import os
import plistlib
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.stats import wasserstein_distance

ROOT = Path(__file__).resolve().parents[1]
CRANIUM = Path("/usr/share/doc/invesalius-examples/examples/Cranium.inv3")
DICOMPYLER = "dicompyler-core==0.5.6"
DEFAULT_CACHE = Path.home() / ".cache" / "meddifffm" / "realism"

# name: phantom region, reference (file and how to find it), in-plane pixel (mm), slice thickness (mm)
COMPARISONS = {
    "head": {"region": "head_neck", "pixel": 0.9570312, "thickness": 1.5, "fov_mm": 300.0, "z_mm": 298.0},
    # a comparison may pose the phantom's arms ("arms_raised": true/false); the seed draws them otherwise.
    # Raised, the chest (seed 0) read farther from its reference on all three distances (HU 17.0 -> 22.6,
    # gradient 3.8 -> 7.5, noise spectrum 0.084 -> 0.103), so the seed's pose (down) stays
    "chest": {"region": "chest", "pixel": 1.074219, "thickness": 3.0, "fov_mm": 440.0, "z_mm": 297.0},
    "abdomen": {"region": "abdomen", "pixel": 0.859375, "thickness": 2.5, "fov_mm": 420.0, "z_mm": 275.0},
}
PATCH = 24
LUNG_VESSEL_TARGET = (0.03, 0.15)
HOMOGENEOUS_HU = 15.0  # most a soft-tissue patch may vary once smoothed at 3 mm


# ---------------------------------------------------------------------------------------------------
# Real references
# ---------------------------------------------------------------------------------------------------


def _pydicom_data_file(name: str) -> Path | None:
    spec = importlib.util.find_spec("data_store")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    return path if path.is_file() else None


def _dicompyler_ct(cache: Path, download: bool) -> Path | None:
    target = cache / "dicompyler_ct.0.dcm"
    if target.is_file():
        return target
    sdists = sorted(cache.glob("dicompyler-core-*.tar.gz"))
    if not sdists and download:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", DICOMPYLER,
                        "-d", str(cache)], check=False, capture_output=True)
        sdists = sorted(cache.glob("dicompyler-core-*.tar.gz"))
    if not sdists:
        return None
    with tarfile.open(sdists[-1]) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("tests/testdata/example_data/ct.0.dcm")), None)
        if member is None:
            return None
        data = tar.extractfile(member).read()
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    tmp.replace(target)
    return target


def _read_slice(path: Path) -> tuple[np.ndarray, float]:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image).astype(np.float32).reshape(image.GetSize()[1], image.GetSize()[0]), image.GetSpacing()[0]


def _resample(a: np.ndarray, factor: float) -> np.ndarray:
    """In-plane resampling of (z, y, x) by ``factor`` (new pixel = old pixel x factor), anti-aliased."""
    if math.isclose(factor, 1.0, rel_tol=1e-4):
        return a
    if factor > 1:
        a = ndimage.gaussian_filter(a, (0, 0.42 * factor, 0.42 * factor))  # about one new pixel's box
    ny, nx = a.shape[1:]
    out_shape = (max(int(round(ny / factor)), 2), max(int(round(nx / factor)), 2))
    return ndimage.zoom(a, (1, out_shape[0] / ny, out_shape[1] / nx), order=1)


def load_reference(name: str, cache: Path, download: bool):
    """(array (z, y, x) in HU at the comparison's pixel size, description) or (None, why)."""
    pixel = COMPARISONS[name]["pixel"]
    if name == "head":
        if not CRANIUM.is_file():
            return None, f"{CRANIUM} missing (apt-get install invesalius-examples)"
        with tarfile.open(CRANIUM) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers()}
            meta = plistlib.loads(tar.extractfile(members["main.plist"]).read())
            raw = tar.extractfile(members["matrix.dat"]).read()
        shape = tuple(meta["matrix"]["shape"])
        volume = np.frombuffer(raw, dtype="<i2").reshape(shape).astype(np.float32)
        volume = volume[:, ::-1]  # InVesalius stores rows bottom-up: flip to the phantoms' anterior-up rows
        return volume, f"invesalius-examples Cranium.inv3, {shape} at {meta['spacing']} mm (GPL-2, read at run time)"
    files = {"abdomen": ("explicit_VR-UN.dcm", "pydicom-data")}
    if name in files:
        path = _pydicom_data_file(files[name][0])
        if path is None:
            return None, f"{files[name][0]} missing (pip install pydicom-data)"
    else:
        path = _dicompyler_ct(cache, download)
        if path is None:
            return None, "dicompyler-core sdist not found (pip download --no-deps --no-binary :all: dicompyler-core)"
    sl, spacing = _read_slice(path)
    sl = np.maximum(sl, -1024.0)  # padding values below air
    return _resample(sl[None], pixel / spacing), f"{path.name} ({spacing:.3f} mm, resampled to {pixel:.3f} mm)"


# ---------------------------------------------------------------------------------------------------
# Phantoms: made by the engine at a given source tree, in a subprocess
# ---------------------------------------------------------------------------------------------------


def _has_field(cls, name: str) -> bool:
    """Whether the engine under test (maybe an old revision) knows this phantom setting."""
    import dataclasses

    return name in {f.name for f in dataclasses.fields(cls)}


def _worker(spec_path: str) -> None:
    """Runs inside the subprocess, with the engine under test first on sys.path."""
    import SimpleITK as sitk

    from MedDiffFMLogic.anatomy import label_index
    from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom, simulate_low_dose

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    factor = spec["pixel_factor"]
    made = {}
    for name in spec["names"]:
        c = COMPARISONS[name]
        region, pixel, thick = c["region"], c["pixel"] * factor, c["thickness"] * spec.get("thickness_factor", 1.0)
        key = (region, round(pixel, 6), thick)
        if key not in made:
            n_xy = int(round(c["fov_mm"] / pixel))
            n_z = int(math.ceil(c["z_mm"] / thick))
            t0 = time.perf_counter()
            pose = {"arms_raised": c["arms_raised"]} if "arms_raised" in c and _has_field(PhantomConfig, "arms_raised") else {}
            ph = make_phantom(PhantomConfig(region=region, size=(n_xy, n_xy, n_z), spacing=(pixel, pixel, thick),
                                            seed=spec["seed"], **pose))
            made[key] = (ph, time.perf_counter() - t0)
        ph, seconds = made[key]
        image = ph.image
        hu = sitk.GetArrayFromImage(image)
        labels = sitk.GetArrayFromImage(ph.labels)

        def area(label):
            try:
                index = label_index(label)
            except Exception:
                return None
            a = (labels == index).sum(axis=(1, 2))
            return a if a.any() else None

        extra = {}
        if name == "head":
            body_z = np.nonzero((hu > -400).sum(axis=(1, 2)) > 50)[0]
            top = int(body_z.max()) if body_z.size else hu.shape[0] - 1
            n = int(round(162.0 / thick))
            z0, z1 = max(top - n + 2, 0), top + 2  # one air slice above the vertex, as in the reference
        else:
            a = area({"chest": "heart", "abdomen": "pancreas"}[name])
            if a is None:
                a = (hu > -400).sum(axis=(1, 2))
            zs = np.nonzero(a > 0.5 * a.max())[0]
            z = int(round(zs.mean()))
            z0, z1 = z, z + 1
            if name == "chest":
                # the lungs are measured at mid-heart; the real slice lies at the thoracic inlet, just
                # above the lung apices: compared with the phantom's first slice above its lungs
                extra["lungs"] = image[:, :, z0:z1]
                lungs = [area(n) for n in ("lung_upper_lobe_left", "lung_upper_lobe_right")]
                lungs = [l for l in lungs if l is not None]
                top = max(int(np.nonzero(l)[0].max()) for l in lungs) if lungs else hu.shape[0] - 2
                z0 = min(top + 1, hu.shape[0] - 1)
                z1 = z0 + 1
        z1 = min(z1, hu.shape[0])
        slab = image[:, :, z0:z1]
        t0 = time.perf_counter()
        noisy = simulate_low_dose(slab, 1.0, seed=spec["seed"])
        scan_s = time.perf_counter() - t0
        arrays = {"noisy": sitk.GetArrayFromImage(noisy), "clean": sitk.GetArrayFromImage(slab)}
        for key, extra_slab in extra.items():
            arrays[key] = sitk.GetArrayFromImage(simulate_low_dose(extra_slab, 1.0, seed=spec["seed"]))
        if spec["figures"]:
            # orthogonal views of the whole phantom scanned at full dose, at about 2 mm in-plane (the
            # scanner's noise SD does not depend on the pixel; per-slice noise, as a real scan's)
            f = max(1, int(round(2.0 / pixel)))
            small = sitk.BinShrink(image, (f, f, 1))
            vol = sitk.GetArrayFromImage(simulate_low_dose(small, 1.0, seed=spec["seed"]))
            zc = (z0 + z1) // 2
            arrays["axial"] = vol[zc]
            arrays["coronal"] = vol[:, vol.shape[1] // 2]
            arrays["sagittal"] = vol[:, :, vol.shape[2] // 2]
            arrays["figure_spacing"] = np.array([pixel * f, thick])
        np.savez_compressed(out / f"{name}.npz", **arrays)
        (out / f"{name}.json").write_text(json.dumps({
            "grid": [int(v) for v in image.GetSize()], "spacing_mm": [float(v) for v in image.GetSpacing()],
            "slices": [int(z0), int(z1)], "generate_s": round(seconds, 1), "scan_s": round(scan_s, 1),
            "scanner": _scanner_settings(),
        }))


def _scanner_settings():
    """The scanner the engine under test scans with (its defaults), or None for an engine without one."""
    try:
        import dataclasses

        from MedDiffFMLogic.phantoms import scanner
    except ImportError:
        return None
    return {**dataclasses.asdict(scanner.Scanner()), "full_dose_photons": scanner.DEFAULT_FULL_DOSE_PHOTONS}


def make_phantoms(names, source: Path, out: Path, seed: int, pixel_factor: float, figures: bool) -> None:
    spec = out / "spec.json"
    spec.write_text(json.dumps({"names": list(names), "out": str(out), "seed": seed, "pixel_factor": pixel_factor,
                                "thickness_factor": 1.0 if pixel_factor == 1.0 else 2.0, "figures": figures}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(source), str(Path(__file__).resolve().parent)]))
    code = "import sys, realism; realism._worker(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(spec)], check=True, env=env, cwd=str(source))


def extract_source(rev: str, into: Path) -> str:
    """The engine (MedDiffFMLogic/) as it was at ``rev``, extracted under ``into``; returns the full hash."""
    full = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", full, "MedDiffFMLogic"], check=True, capture_output=True).stdout
    tar_path = into / "src.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tar:
        tar.extractall(into, filter="data")
    return full


# ---------------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------------


def _disk(radius_px: float) -> np.ndarray:
    r = max(int(round(radius_px)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return (yy * yy + xx * xx <= r * r)[None]


def body_mask(hu: np.ndarray, pixel: float) -> np.ndarray:
    """The patient: the largest component above -400 HU after a 3 mm opening (which cuts the table and
    head holders off), holes (lungs, airways, bowel gas) filled slice by slice."""
    mask = ndimage.binary_opening(hu > -400, structure=_disk(3.0 / pixel))
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, lab, index=range(1, n + 1))
    mask = lab == (1 + int(np.argmax(sizes)))
    return np.stack([ndimage.binary_fill_holes(s) for s in mask])


def gradient_magnitude(hu: np.ndarray, pixel: float) -> np.ndarray:
    gy, gx = np.gradient(hu.astype(np.float64), pixel, axis=(1, 2))
    return np.hypot(gx, gy)


def nps_shape(hu: np.ndarray, body: np.ndarray, pixel: float):
    """Radially averaged noise power spectrum of soft-tissue patches, normalised to unit sum:
    (frequencies in lp/mm, weights, number of patches, mean patch SD in HU)."""
    tissue = ndimage.binary_erosion(body, structure=_disk(3.0 / pixel)) & (hu > -250) & (hu < 300)
    # homogeneous tissue only (an organ, muscle, brain, fat): the image smoothed at 3 mm varies little over
    # the patch, so its spectrum is the noise's (and the fine texture's), not that of organ boundaries
    smooth = ndimage.gaussian_filter(hu.astype(np.float64), (0, 3.0 / pixel, 3.0 / pixel))
    yy, xx = np.mgrid[0:PATCH, 0:PATCH]
    design = np.stack([np.ones(PATCH * PATCH), yy.ravel(), xx.ravel()], axis=1)
    spectra, sds = [], []
    step = PATCH // 2
    for z in range(hu.shape[0]):
        for y in range(0, hu.shape[1] - PATCH + 1, step):
            for x in range(0, hu.shape[2] - PATCH + 1, step):
                if not tissue[z, y : y + PATCH, x : x + PATCH].all():
                    continue
                p = hu[z, y : y + PATCH, x : x + PATCH].astype(np.float64)
                if not -150 <= p.mean() <= 150 or smooth[z, y : y + PATCH, x : x + PATCH].std() > HOMOGENEOUS_HU:
                    continue
                coef, *_ = np.linalg.lstsq(design, p.ravel(), rcond=None)
                r = p - (design @ coef).reshape(PATCH, PATCH)
                sds.append(r.std())
                spectra.append(np.abs(np.fft.fft2(r)) ** 2)
    if len(spectra) < 3:
        return None, None, len(spectra), float("nan")
    nps = np.mean(spectra, axis=0)
    f = np.fft.fftfreq(PATCH, d=pixel)
    fr = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    nbins = PATCH // 2
    edges = np.linspace(0.0, 0.5 / pixel, nbins + 1)
    which = np.digitize(fr.ravel(), edges) - 1
    ok = (which >= 0) & (which < nbins) & (fr.ravel() > 0)
    radial = np.bincount(which[ok], weights=nps.ravel()[ok], minlength=nbins) / np.maximum(np.bincount(which[ok], minlength=nbins), 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    return centres, radial / radial.sum(), len(spectra), float(np.mean(sds))


def lung_vessel_fraction(hu: np.ndarray, body: np.ndarray, pixel: float) -> float:
    """Fraction of the lungs above -500 HU (vessels, airway walls, fissures): the lungs are the air inside
    the body, closed by 5 mm and filled, less a 2 mm rim."""
    air = body & (hu < -400)
    lab, n = ndimage.label(air)
    if n == 0:
        return float("nan")
    sizes = ndimage.sum(air, lab, index=range(1, n + 1))
    keep = np.isin(lab, 1 + np.nonzero(sizes >= 0.02 * body.sum())[0])  # lungs, not bowel gas specks
    lungs = ndimage.binary_closing(keep, structure=_disk(5.0 / pixel))
    lungs = np.stack([ndimage.binary_fill_holes(s) for s in lungs])
    lungs = ndimage.binary_erosion(lungs, structure=_disk(2.0 / pixel)) & body
    return float((hu[lungs] > -500).mean()) if lungs.any() else float("nan")


def statistics(hu: np.ndarray, pixel: float, lungs: bool) -> dict:
    body = body_mask(hu, pixel)
    inner = ndimage.binary_erosion(body, structure=_disk(3.0 / pixel))
    f, w, patches, sd = nps_shape(hu, body, pixel)
    out = {
        "hu": np.clip(hu[body], -1024, 3000).astype(np.float32),
        "gradient": gradient_magnitude(hu, pixel)[inner].astype(np.float32),
        "nps": (f, w), "patches": patches, "patch_sd_hu": sd,
        "body_voxels": int(body.sum()),
    }
    if lungs:
        out["lung_vessel_fraction"] = lung_vessel_fraction(hu, body, pixel)
    return out


def _subsample(x: np.ndarray, n: int = 400_000) -> np.ndarray:
    return x if x.size <= n else x[np.random.default_rng(0).choice(x.size, n, replace=False)]


def compare(phantom: dict, real: dict) -> dict:
    def summary(s):
        h = s["hu"]
        return {"hu_percentiles_5_25_50_75_95": [round(float(v), 1) for v in np.percentile(h, [5, 25, 50, 75, 95])],
                "gradient_median_hu_per_mm": round(float(np.median(s["gradient"])), 2),
                "nps_mean_frequency_lpmm": None if s["nps"][0] is None else round(float((s["nps"][0] * s["nps"][1]).sum()), 4),
                "soft_tissue_patches": s["patches"], "soft_tissue_patch_sd_hu": round(s["patch_sd_hu"], 1),
                **({"lung_vessel_fraction": round(s["lung_vessel_fraction"], 4)} if "lung_vessel_fraction" in s else {})}

    d = {
        "hu_w1": float(wasserstein_distance(_subsample(phantom["hu"]), _subsample(real["hu"]))),
        "gradient_w1": float(wasserstein_distance(_subsample(phantom["gradient"]), _subsample(real["gradient"]))),
    }
    (fp, wp), (fr, wr) = phantom["nps"], real["nps"]
    d["nps_w1"] = float("nan") if fp is None or fr is None else float(wasserstein_distance(fp, fr, wp, wr))
    return {"distances": {k: round(v, 4) for k, v in d.items()}, "phantom": summary(phantom), "real": summary(real)}


# ---------------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------------


def figure(name: str, arrays, reference: np.ndarray, ref_pixel: float, ref_thick: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = {"head": (40, 400), "chest": (-400, 1600), "abdomen": (40, 400)}[name]
    lo, hi = window[0] - window[1] / 2, window[0] + window[1] / 2
    pixel, thick = (float(v) for v in arrays["figure_spacing"])
    views = [("phantom axial", arrays["axial"], pixel / pixel), ("phantom coronal", arrays["coronal"][::-1], thick / pixel),
             ("phantom sagittal", arrays["sagittal"][::-1], thick / pixel)]
    if reference.shape[0] > 1:
        mid = reference.shape[0] // 2
        views += [("real axial", reference[mid], 1.0), ("real coronal", reference[:, reference.shape[1] // 2][::-1], ref_thick / ref_pixel),
                  ("real sagittal", reference[:, :, reference.shape[2] // 2][::-1], ref_thick / ref_pixel)]
    elif name == "abdomen":  # the file stores the patient's back at the top; shown the usual way up
        views += [("real axial (flipped)", reference[0, ::-1], 1.0)]
    else:
        views += [("real axial", reference[0], 1.0)]
    if "lungs" in arrays:
        views.append(("phantom axial, mid-heart", arrays["lungs"][0], 1.0))
    cols = 3
    rows = int(math.ceil(len(views) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), dpi=80)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, (title, img, aspect) in zip(np.ravel(axes), views):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="antialiased")
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{name}: phantom (full-dose scan) and real CT, W {window[1]} L {window[0]}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".part.png")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    try:  # a palette PNG keeps the file small (grey images need few colours)
        from PIL import Image

        Image.open(tmp).convert("L").save(tmp, optimize=True)
    except ImportError:
        pass
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def table(old_path: Path, new_path: Path) -> str:
    old, new = json.loads(old_path.read_text()), json.loads(new_path.read_text())
    lines = ["| region | distance to real CT | old | new |", "|---|---|---|---|"]
    for name, n in new["comparisons"].items():
        o = old["comparisons"].get(name, {})
        if "distances" not in n:
            continue
        for key, value in n["distances"].items():
            ov = o.get("distances", {}).get(key, float("nan"))
            lines.append(f"| {name} | {key} | {ov:.4g} | {value:.4g} |")
        if "lung_vessel_fraction" in n["phantom"]:
            lines.append(f"| {name} | lung vessel fraction (phantom at mid-heart) | "
                         f"{o.get('phantom', {}).get('lung_vessel_fraction', float('nan')):.3f} "
                         f"| {n['phantom']['lung_vessel_fraction']:.3f} | {n['real']['lung_vessel_fraction']} |")
    return "\n".join(lines)


# --scanner-noise: adult-size patients (patient_scale 1, as training and quality.py draw them) in a 420 mm
# field of view, 8 slices through the middle of the region; the abdomen also at a second seed (a bigger
# patient), the scanner's calibration pair (seeds/scanner.md)
NOISE_FOV_MM = 420
NOISE_SEEDS = (0, 10001)


def scanner_noise(seed: int = 0) -> dict:
    """Soft-tissue noise (HU, measured) of adult-size phantoms at several doses, pixel sizes and slice
    thicknesses, with and without the tube-current modulation, and the scanner's cost (seeds/scanner.md
    has the table)."""
    sys.path.insert(0, str(ROOT))
    import SimpleITK as sitk

    from MedDiffFMLogic.phantoms import PhantomConfig, make_phantom, simulate_low_dose
    from MedDiffFMLogic.phantoms.scanner import Scanner, measure_noise_hu

    def noise(image, dose, **kw):
        return round(measure_noise_hu(image, simulate_low_dose(image, dose, seed=1, **kw)), 1)

    def adult(region, s):
        return make_phantom(PhantomConfig(region=region, size=(NOISE_FOV_MM, NOISE_FOV_MM, 8), spacing=(1.0, 1.0, 1.0),
                                          seed=s, patient_scale=1.0))

    out = {}
    seeds = (seed,) + tuple(s for s in NOISE_SEEDS if s != seed)
    for s in seeds:
        ph = adult("abdomen", s)
        out[f"abdomen_1mm_seed{s}"] = {d: noise(ph.image, d) for d in (1.0, 0.5, 0.25, 0.1)}
        fixed = Scanner(exposure_control=0.0, angular_modulation=False)
        out[f"abdomen_1mm_seed{s}_fixed_tube_current"] = {d: noise(ph.image, d, scanner=fixed) for d in (1.0, 0.25)}
        if s != seed:
            continue
        out["abdomen_thickness_full_dose"] = {t: noise(ph.image, 1.0, slice_thickness_mm=t) for t in (1.0, 2.5, 5.0)}
        for f in (2, 4):
            small = sitk.BinShrink(ph.image, (f, f, 1))
            out[f"abdomen_{f}mm_pixels_1mm_slices"] = {d: noise(small, d) for d in (1.0, 0.25)}
    for region in ("chest", "head_neck"):
        out[f"{region}_1mm"] = {d: noise(adult(region, seed).image, d) for d in (1.0, 0.25)}
    ph = make_phantom(PhantomConfig(region="chest", size=(96, 96, 16), spacing=(4.0, 4.0, 5.0), seed=seed,
                                    patient_scale=1.0))
    out["chest_4x4x5mm_384mm_fov"] = {d: noise(ph.image, d) for d in (1.0, 0.25)}
    seconds = {}
    for n, px, nz in ((96, 2.0, 64), (256, 1.5, 1), (512, 0.75, 1)):
        im = sitk.GetImageFromArray(np.zeros((nz, n, n), np.float32))
        im.SetSpacing((px, px, 1.0))
        t0 = time.perf_counter()
        simulate_low_dose(im, 0.25)
        seconds[f"{n}x{n}x{nz}"] = round(time.perf_counter() - t0, 2)
    out["scanner_seconds"] = seconds
    return out


def run(names, *, commit: str | None = None, seed: int = 0, pixel_factor: float = 1.0, figures: Path | None = None,
        cache: Path = DEFAULT_CACHE, download: bool = True, arrays_dir: Path | None = None,
        reuse: bool = False) -> dict:
    result = {"benchmark": "realism", "seed": seed, "pixel_factor": pixel_factor, "comparisons": {}}
    references = {}
    for name in names:
        ref, about = load_reference(name, cache, download)
        if ref is None:
            result["comparisons"][name] = {"skipped": about}
        else:
            if pixel_factor != 1.0:
                ref = _resample(ref, pixel_factor)
            references[name] = (ref, about)
    with tempfile.TemporaryDirectory(prefix="realism-") as tmp:
        tmp = Path(tmp)
        if commit:
            source = tmp / "src"
            source.mkdir()
            result["generator"] = {"commit": extract_source(commit, source)}
        else:
            source = ROOT
            head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
            result["generator"] = {"working_tree_at": head}
        out = arrays_dir if arrays_dir is not None else tmp / "out"
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        todo = [n for n in references if not (reuse and (out / f"{n}.npz").is_file())]
        if todo:
            make_phantoms(todo, source, out, seed, pixel_factor, figures is not None)
        result["phantom_seconds"] = round(time.perf_counter() - t0, 1)
        for name, (ref, about) in references.items():
            c = COMPARISONS[name]
            pixel = c["pixel"] * pixel_factor
            arrays = dict(np.load(out / f"{name}.npz"))
            info = json.loads((out / f"{name}.json").read_text())
            lungs = name == "chest"
            entry = compare(statistics(arrays["noisy"], pixel, False), statistics(ref, pixel, False))
            if lungs:
                fraction = lung_vessel_fraction(arrays["lungs"], body_mask(arrays["lungs"], pixel), pixel)
                lo, hi = LUNG_VESSEL_TARGET
                entry["distances"]["lung_vessel_fraction"] = round(max(lo - fraction, fraction - hi, 0.0), 4)
                entry["phantom"]["lung_vessel_fraction"] = round(fraction, 4)
                entry["real"]["lung_vessel_fraction"] = f"target {lo:.2f}-{hi:.2f}"
            scanner = info.pop("scanner", None)  # the engine's scanner settings (None: an engine without one)
            entry.update({"reference": about, "phantom_region": c["region"], "pixel_mm": round(pixel, 4),
                          "slice_thickness_mm": info["spacing_mm"][2], "phantom_grid": info,
                          "scanner": scanner})
            result["comparisons"][name] = entry
            if figures is not None:
                figures.mkdir(parents=True, exist_ok=True)
                figure(name, arrays, ref, pixel, c["thickness"], figures / f"realism_{name}.png")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--generator-commit", help="measure the phantoms of the engine at this git revision")
    ap.add_argument("--only", nargs="+", choices=list(COMPARISONS), default=list(COMPARISONS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4x coarser pixels, 2x thicker slices (a smoke run, not the measure)")
    ap.add_argument("--figures", type=Path, help="write realism_<region>.png here")
    ap.add_argument("--output", type=Path, help="JSON file (default benchmarks/results/realism[_REV].json; '-' for none)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--arrays", type=Path, help="keep the scanned phantom slices (npz) in this folder")
    ap.add_argument("--reuse", action="store_true", help="with --arrays: measure the slices found there again")
    ap.add_argument("--no-download", action="store_true", help="do not pip-download dicompyler-core's sdist")
    ap.add_argument("--scanner-noise", action="store_true", help="print the scanner's measured noise levels and exit")
    ap.add_argument("--table", nargs=2, type=Path, metavar=("OLD", "NEW"), help="print a Markdown table and exit")
    args = ap.parse_args(argv)
    if args.scanner_noise:
        print(json.dumps(scanner_noise(args.seed), indent=1))
        return 0
    if args.table:
        print(table(*args.table))
        return 0
    result = run(args.only, commit=args.generator_commit, seed=args.seed, pixel_factor=4.0 if args.quick else 1.0,
                 figures=args.figures, cache=args.cache, download=not args.no_download, arrays_dir=args.arrays,
                 reuse=args.reuse)
    text = json.dumps(result, indent=1)
    print(text)
    output = args.output
    if output is None and not args.quick:
        rev = "" if not args.generator_commit else "_" + args.generator_commit[:7]
        output = ROOT / "benchmarks" / "results" / f"realism{rev}.json"
    if output is not None and str(output) != "-":
        tmp = Path(str(output) + ".part")
        tmp.write_text(text + "\n")
        tmp.replace(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
