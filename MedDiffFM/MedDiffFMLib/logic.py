"""The old name of jobs.py (one task run from Slicer nodes to Slicer nodes), kept so that code written
against `MedDiffFMLib.logic` still imports; use `MedDiffFMLib.jobs`. "Logic" is the engine package's
name (MedDiffFMLogic) and the Slicer module's logic class (MedDiffFM.MedDiffFMLogic)."""

from .jobs import Inputs, Job, Processor, Result, TEMP_PREFIX, default_temp_root, load_volume, save_node  # noqa: F401
from .jobs import _stem  # noqa: F401  (batch.py of older checkouts)
