"""The demo's montage: one row per task, input | output, on the axial slice through the nodule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import ctio
from ..figures import pyplot, save_figure


def montage(path: Path, phantom, low_dose: sitk.Image, thick: sitk.Image, files: dict[str, Path],
             new_lesion: np.ndarray) -> Path:
    """Rows: one per task, input | output, on the axial slice through the nodule."""
    plt = pyplot()

    mask = sitk.GetArrayViewFromImage(phantom.lesion_mask)
    z = int(np.argmax(mask.sum(axis=(1, 2)))) if mask.any() else mask.shape[0] // 2
    z_new = int(np.argmax(new_lesion.sum(axis=(1, 2)))) if new_lesion.any() else z

    def read(key, interpolator="linear"):
        return sitk.GetArrayFromImage(ctio.resample_onto(ctio.read_ct(files[key], check_hu=False), phantom.image, interpolator))

    ct = sitk.GetArrayFromImage(phantom.image)
    rows = [
        ("denoise", sitk.GetArrayFromImage(low_dose), "low-dose input", read("denoised"), "denoised", z),
        ("anomaly", sitk.GetArrayFromImage(low_dose), "low-dose input", read("anomaly_map"), "anomaly map (HU)", z),
        ("inpaint", ct, "phantom with nodule", read("inpainted"), "nodule removed", z),
        ("lesion", ct, "phantom (mask outlined)", read("lesion_generated"), "lesion generated", z_new),
        ("superres", sitk.GetArrayFromImage(ctio.resample_onto(thick, phantom.image, "nearest")),
         f"{thick.GetSpacing()[2]:g} mm slabs", read("superres"), "super-resolved", z),
        ("synthesize", sitk.GetArrayFromImage(phantom.labels).astype(float), "organ labels", read("synthesized"),
         "synthesized", z),
    ]
    fig, axes = plt.subplots(len(rows), 2, figsize=(6.4, 3.1 * len(rows)))
    for (task, left, left_title, right, right_title, k), (ax_in, ax_out) in zip(rows, axes):
        if task == "synthesize":
            ax_in.imshow(left[k], cmap="tab20", interpolation="nearest")
        else:
            ax_in.imshow(left[k], cmap="gray", vmin=-1000, vmax=400)
        if task == "anomaly":
            ax_out.imshow(right[k], cmap="inferno", vmin=0, vmax=max(float(np.percentile(right, 99.9)), 1.0))
        else:
            ax_out.imshow(right[k], cmap="gray", vmin=-1000, vmax=400)
        if task == "lesion":
            ax_in.contour(new_lesion[k], levels=[0.5], colors="red", linewidths=0.8)
        ax_in.set_title(f"{task}: {left_title}", fontsize=9)
        ax_out.set_title(right_title, fontsize=9)
        ax_in.axis("off")
        ax_out.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=72)
