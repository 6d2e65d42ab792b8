"""Markdown tables of a benchmark's JSON (for the README): `python benchmarks/table.py [FILE]`, where FILE
is a quality.json (the default: results/quality.json; issue 12's targets first, met or not, then each
task's figures) or a speed JSON of `speed.py` (its sampling-core
runs and its tasks section)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "quality.json"


def method_table(header: str, keys: tuple[str, ...], labelled) -> list[str]:
    """A PSNR / SSIM table: one row per (label, methods), one column per method key."""
    out = [header, "|---" * (len(keys) + 1) + "|"]
    for label, methods in labelled:
        cells = [f"{methods[k]['psnr']:.2f} dB / {methods[k]['ssim']:.4f}" for k in keys]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out + [""]


def _value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def target_rows(targets: list[dict]) -> list[str]:
    """Issue 12's targets: one row each, the measured value against its threshold."""
    out = ["| target | measured | threshold | met |", "|---|---|---|---|"]
    for t in targets:
        unit = f" {t['unit']}" if t.get("unit") else ""
        out.append(f"| {t['target']} | {_value(t['measured'])}{unit} | {t['comparison']} {_value(t['threshold'])}{unit} | "
                   f"{'yes' if t['met'] else '**no**'} |")
    return out + [""]


def rows(doc: dict) -> list[str]:
    if "runs" in doc or "tasks" in doc:
        return speed_rows(doc)
    out = []
    if doc.get("targets"):
        out += target_rows(doc["targets"])
    if doc.get("protocol_checks"):
        out += ["| protocol check (the scans, not the model) | measured | required | met |", "|---|---|---|---|"]
        for c in doc["protocol_checks"]:
            out.append(f"| {c['target']} | {_value(c['measured'])} {c['unit']} | {_value(c['threshold'])}-{_value(c['upper'])} "
                       f"{c['unit']} | {'yes' if c['met'] else '**no**'} |")
        out.append("")
    if "denoise" in doc:
        first = next(r for doses in doc["denoise"].values() for r in doses.values())
        keys = tuple(k for k in ("noisy", "meddifffm", "meddifffm_tuned", "bm4d", "nlm", "curvature_flow") if k in first["methods"])
        names = {"noisy": "noisy", "meddifffm": "MedDiff-FM (defaults)", "meddifffm_tuned": "MedDiff-FM (lambda tuned)",
                 "bm4d": "BM4D", "nlm": "NLM", "curvature_flow": "CurvatureFlow"}
        noise = "noise_hu_in_soft_tissue" if "noise_hu_in_soft_tissue" in first else "noise_hu_in_body"
        out += method_table(
            "| denoise: region, dose (noise) | " + " | ".join(names[k] for k in keys) + " |", keys,
            ((f"{region}, {dose.replace('dose_', '')} ({r[noise]} HU)", r["methods"])
             for region, doses in doc["denoise"].items() for dose, r in doses.items()),
        )
    if "anomaly" in doc:
        out += ["| anomaly: region (scans with / without lesions) | voxel AUROC (host organ) | Dice (default threshold) | image AUROC |",
                "|---|---|---|---|"]
        for region, r in doc["anomaly"].items():
            counts = (r.get("scans_with_lesions", r.get("phantoms_with_lesions")), r.get("scans_without", r.get("phantoms_without")))
            out.append(f"| {region} ({counts[0]} / {counts[1]}) | {r['voxel_auroc_in_host_organ']:.3f} | "
                       f"{r['dice_default_threshold']:.3f} | {r['image_auroc']:.3f} |")
        out.append("")
    if "inpaint" in doc:
        out += ["| inpaint (lesion removal): region | outside mask identical | filled HU (mean +- sd) | host tissue around | lesion before | remaining contrast |",
                "|---|---|---|---|---|---|"]
        for region, r in doc["inpaint"].items():
            out.append(f"| {region} | {r['outside_mask_identical']} | {r['filled_mean_hu']:.0f} +- {r['filled_std_hu']:.0f} | "
                       f"{r['around_mean_hu']:.0f} +- {r['around_std_hu']:.0f} | {r['lesion_mean_hu']:.0f} | {r['remaining_contrast_fraction']:.2f} |")
        out.append("")
    if "lesion" in doc:
        out += ["| lesion generation: region, diameter | contrast (HU) | Dice |", "|---|---|---|"]
        for region, r in doc["lesion"].items():
            for d, v in r["masks"].items():
                out.append(f"| {region}, {d} | {v['contrast_hu']:+.0f} | {v['dice']:.3f} |")
        out.append("")
    if "superres" in doc:
        out += method_table(
            "| superres: setting, region | trilinear | B-spline | MedDiff-FM |", ("trilinear", "bspline", "meddifffm"),
            ((f"{setting.replace('_', ' ')}, {region}", r["methods"])
             for setting, regions in doc["superres"].items() for region, r in regions.items()),
        )
    if "synthesize" in doc:
        out += ["| synthesize: region, organ | synthesized HU | phantom HU |", "|---|---|---|"]
        for region, r in doc["synthesize"].items():
            for organ, v in r["organs"].items():
                out.append(f"| {region}, {organ} | {v['synthesized_mean_hu']:.0f} | {v['phantom_mean_hu']:.0f} |")
            out.append(f"| {region}, seam ratio (1 = none) | {r['seam_ratio']} | |")
        out.append("")
    return out


def _xyz(shape_zyx) -> str:
    return " x ".join(str(n) for n in reversed(shape_zyx))


def _memory(run: dict, *methods: str) -> str:
    peak = run.get("peak_memory") or {}
    values = [peak.get(m, {}).get("peak_growth_mib") for m in methods]
    return " / ".join("?" if v is None else f"{v:.0f}" for v in values) + " MiB"


def speed_rows(doc: dict) -> list[str]:
    out = []
    if doc.get("runs"):
        out += ["| volume (x, y, z) | ours, voxel-steps/s | MONAI baseline | ratio | max \\|difference\\| | peak memory growth, ours / MONAI |",
                "|---|---|---|---|---|---|"]
        for r in doc["runs"]:
            base = r.get("baseline", {}).get("voxel_steps_per_s")
            out.append(f"| {_xyz(r['shape_zyx'])} | {r['ours']['voxel_steps_per_s']:,} | {'' if base is None else f'{base:,}'} | "
                       f"{r.get('speedup', '')}{'x' if 'speedup' in r else ''} | {r.get('max_abs_difference', 0):.4f} | "
                       f"{_memory(r, 'ours', 'baseline')} |")
        out.append("")
    tasks = doc.get("tasks") or {}
    if tasks.get("runs"):
        out += ["| task, volume (x, y, z) | estimated volume x calls | ours: s (voxel-steps/s) | MONAI sliding window: s (voxel-steps/s) "
                "| speedup | peak memory growth, ours / MONAI | estimate max \\|diff\\| (same weight map) | output \\|diff\\| HU: max / 99.9% / mean |",
                "|---|---|---|---|---|---|---|---|"]
        for r in tasks["runs"]:
            if "speedup" not in r:
                out.append(f"| {r['task']}, {_xyz(r['shape_zyx'])} | failed: {r.get('ours', r.get('baseline'))} | | | | | | |")
                continue
            ours, base, e = r["ours"], r["baseline"], r["estimate_difference"]
            calls = f"{r['estimated_voxels']:,} x {r['estimator_calls']}"
            same = e.get("same_weights_max_abs_difference", "")
            out.append(
                f"| {r['task']}, {_xyz(r['shape_zyx'])} | {calls} | {ours['seconds']:.1f} ({ours['voxel_steps_per_s']:,}) | "
                f"{base['seconds']:.1f} ({base['voxel_steps_per_s']:,}) | {r['speedup']}x | {_memory(r, 'ours', 'baseline')} | "
                f"{e.get('max_abs_difference', '?')} ({same}) | {r['max_abs_difference']:.1f} / {r['p999_abs_difference']:.1f} / "
                f"{r['mean_abs_difference']:.2f} |")
            skip = r.get("ours_skip_air")
            if skip and "speedup" in skip:
                o = skip["output_difference"]
                out.append(
                    f"| {r['task']} --skip-air, {_xyz(r['shape_zyx'])} | {skip['windows_per_step']} of {skip['windows_in_all']} windows | "
                    f"{skip['seconds']:.1f} ({skip['voxel_steps_per_s']:,}) | (as above) | {skip['speedup']}x "
                    f"({skip['speedup_over_ours']}x over ours) | {skip['peak_memory']['peak_growth_mib']:.0f} MiB | "
                    f"{skip['estimate_difference'].get('max_abs_difference', '?')} "
                    f"({skip['estimate_difference'].get('same_weights_max_abs_difference', '')}; in the body) | "
                    f"{o['max_abs_difference']:.1f} / {o['p999_abs_difference']:.1f} / {o['mean_abs_difference']:.2f} |")
        out.append("")
    return out


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    print("\n".join(rows(json.loads(path.read_text()))))
