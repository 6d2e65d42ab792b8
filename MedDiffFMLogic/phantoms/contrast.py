"""Contrast phases: intravenous iodine changes the HU of blood and of perfused organs.

``native`` (the default) is unenhanced CT, the phase the reference HU table describes. ``arterial``
(late arterial, ~35 s after injection): arteries, left heart and pulmonary veins bright, the right heart
and pulmonary arteries less so, systemic veins barely, kidney cortex brighter than medulla
(corticomedullary phase), pancreas and spleen enhance. ``portal_venous`` (~70 s): arteries and veins
alike, liver and spleen enhanced, kidneys homogeneous (nephrographic). ``random`` draws one of the
three per seed (for training sets). Values: typical means of clinical contrast CT at ~120 kVp
(Prokop and Galanski, ch. 3-4); a per-seed jitter is added to each tissue as for native CT.
"""

from __future__ import annotations

import numpy as np

CONTRAST_PHASES = ("native", "arterial", "portal_venous")
CONTRAST_CHOICES = CONTRAST_PHASES + ("random",)

# tissue -> mean HU in the phase (tissues not named keep their native value)
PHASE_HU: dict[str, dict[str, float]] = {
    "native": {},
    "arterial": {
        "artery": 320.0, "heart_left": 320.0, "pulm_vein": 300.0, "heart_right": 200.0, "pulm_art": 230.0,
        "vein": 70.0, "upper_vein": 380.0, "portal": 110.0, "liver": 75.0, "spleen": 115.0,
        "kidney": 170.0, "kidney_medulla": 60.0, "pancreas": 115.0, "myocardium": 105.0, "gi_wall": 90.0,
        "muscle": 55.0, "thyroid": 170.0, "adrenal": 70.0,
    },
    "portal_venous": {
        "artery": 165.0, "heart_left": 160.0, "pulm_vein": 160.0, "heart_right": 160.0, "pulm_art": 160.0,
        "vein": 155.0, "upper_vein": 170.0, "portal": 185.0, "liver": 110.0, "spleen": 115.0,
        "kidney": 165.0, "kidney_medulla": 150.0, "pancreas": 100.0, "myocardium": 95.0, "gi_wall": 85.0,
        "muscle": 60.0, "thyroid": 140.0, "adrenal": 60.0,
    },
}


def resolve_phase(contrast: str, seed: int) -> str:
    """The phase a config asks for; "random" is drawn from the seed (its own stream: anatomy unchanged)."""
    if contrast != "random":
        return contrast
    return CONTRAST_PHASES[int(np.random.default_rng([int(seed), 3]).integers(len(CONTRAST_PHASES)))]


def apply_phase(tissues: dict[str, tuple[float, float]], native: dict, phase: str) -> dict:
    """Shift each tissue's (jittered) mean by the phase's change from the native mean."""
    out = dict(tissues)
    for name, hu in PHASE_HU[phase].items():
        mean, tex = out[name]
        out[name] = (mean + hu - native[name][0], tex)
    return out
