"""Procedural CT phantoms: anatomy with TotalSegmentator labels, lesions, and a low-dose scanner model.

Public entry points (unchanged from the single-module phantoms.py): ``PhantomConfig``, ``Phantom``,
``make_phantom``, ``organ_mean_hu``, ``simulate_low_dose``, ``REFERENCE_HU_RANGES``, ``LESION_MODELS``.
"""

from ._legacy import LESION_MODELS, REFERENCE_HU_RANGES, Phantom, PhantomConfig, make_phantom, organ_mean_hu
from .scanner import DEFAULT_FULL_DOSE_PHOTONS, MU_WATER_PER_MM, simulate_low_dose

__all__ = [
    "PhantomConfig",
    "Phantom",
    "make_phantom",
    "simulate_low_dose",
    "organ_mean_hu",
    "REFERENCE_HU_RANGES",
    "LESION_MODELS",
    "MU_WATER_PER_MM",
    "DEFAULT_FULL_DOSE_PHOTONS",
]
