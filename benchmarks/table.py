"""Markdown tables of a quality.json (for the README): `python benchmarks/table.py [results/quality.json]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent / "results" / "quality.json"


def rows(doc: dict) -> list[str]:
    out = []
    if "denoise" in doc:
        out += ["| denoise: region, dose (noise in body) | noisy | MedDiff-FM (defaults) | MedDiff-FM (lambda tuned) | BM4D | NLM | CurvatureFlow |",
                "|---|---|---|---|---|---|---|"]
        for region, doses in doc["denoise"].items():
            for dose, r in doses.items():
                m = r["methods"]
                cells = [f"{m[k]['psnr']:.2f} dB / {m[k]['ssim']:.4f}" for k in
                         ("noisy", "meddifffm", "meddifffm_tuned", "bm4d", "nlm", "curvature_flow")]
                out.append(f"| {region}, {dose.replace('dose_', '')} ({r['noise_hu_in_body']} HU) | " + " | ".join(cells) + " |")
        out.append("")
    if "anomaly" in doc:
        out += ["| anomaly: region | voxel AUROC (host organ) | Dice (default threshold) | image AUROC |", "|---|---|---|---|"]
        for region, r in doc["anomaly"].items():
            out.append(f"| {region} | {r['voxel_auroc_in_host_organ']:.3f} | {r['dice_default_threshold']:.3f} | {r['image_auroc']:.3f} |")
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
        out += ["| superres: setting, region | trilinear | B-spline | MedDiff-FM |", "|---|---|---|---|"]
        for setting, regions in doc["superres"].items():
            for region, r in regions.items():
                m = r["methods"]
                cells = [f"{m[k]['psnr']:.2f} dB / {m[k]['ssim']:.4f}" for k in ("trilinear", "bspline", "meddifffm")]
                out.append(f"| {setting.replace('_', ' ')}, {region} | " + " | ".join(cells) + " |")
        out.append("")
    if "synthesize" in doc:
        out += ["| synthesize: region, organ | synthesized HU | phantom HU |", "|---|---|---|"]
        for region, r in doc["synthesize"].items():
            for organ, v in r["organs"].items():
                out.append(f"| {region}, {organ} | {v['synthesized_mean_hu']:.0f} | {v['phantom_mean_hu']:.0f} |")
            out.append(f"| {region}, seam ratio (1 = none) | {r['seam_ratio']} | |")
        out.append("")
    return out


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
    print("\n".join(rows(json.loads(path.read_text()))))
