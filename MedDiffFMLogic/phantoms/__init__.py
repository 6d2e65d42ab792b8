"""Procedural CT phantoms: anatomy with TotalSegmentator labels, lesions, and a low-dose scanner model.

Public entry points: ``PhantomConfig``, ``Phantom``, ``make_phantom``, ``organ_mean_hu``,
``simulate_low_dose``, ``measure_noise_hu``, ``Scanner``, ``REFERENCE_HU_RANGES``, ``LESION_MODELS``. What is modelled: seeds/phantoms.md.

Modules: ``config`` (settings, reference tables), ``atlas`` (nominal body tables), ``shapes`` (implicit
shapes, trees, the canvas), ``body`` with ``chest``, ``abdomen``, ``skeleton``, ``head_neck`` (the body
model, painted by region), ``lesions``, ``textures`` (texture and blur), ``generate`` (assembly),
``scanner`` (low-dose noise).
"""

from .config import LESION_MODELS, REFERENCE_HU_RANGES, Phantom, PhantomConfig
from .generate import make_phantom, organ_mean_hu
from .scanner import DEFAULT_FULL_DOSE_PHOTONS, MU_WATER_PER_MM, Scanner, measure_noise_hu, simulate_low_dose

__all__ = [
    "PhantomConfig",
    "Phantom",
    "make_phantom",
    "simulate_low_dose",
    "measure_noise_hu",
    "Scanner",
    "organ_mean_hu",
    "REFERENCE_HU_RANGES",
    "LESION_MODELS",
    "MU_WATER_PER_MM",
    "DEFAULT_FULL_DOSE_PHOTONS",
]
