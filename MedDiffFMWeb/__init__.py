"""MedDiffFM in a web browser: the Slicer module's panels on trame-slicer (slicer-core).

The web app reuses the Slicer module's library (MedDiffFM/MedDiffFMLib: the task table, the MRML
bridge, the engine runner and the Processor), so both GUIs run the same logic. Like the Slicer module,
the GUI process never imports torch: the engine runs in its own process.

- session: the scene-side logic without any UI (load a CT, paint a mask, run a task, results, downloads);
- app: the trame UI and the `meddifffm-web` entry point.
"""

from __future__ import annotations

import sys
from pathlib import Path

_MODULE_DIR = Path(__file__).resolve().parent.parent / "MedDiffFM"


def import_lib():
    """The Slicer module's library, importable from the source tree (where the web app lives)."""
    if not (_MODULE_DIR / "MedDiffFMLib" / "__init__.py").is_file():
        raise ImportError(f"MedDiffFMLib was not found in {_MODULE_DIR}: run the web app from a MedDiffFM "
                          "checkout (pip install -e '.[web]')")
    if str(_MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(_MODULE_DIR))
    import MedDiffFMLib

    return MedDiffFMLib
