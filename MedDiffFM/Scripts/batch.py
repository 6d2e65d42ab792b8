"""Headless batch runs of a MedDiffFM task over a folder of scans, inside Slicer:

    Slicer --no-main-window --python-script <extension>/MedDiffFM/Scripts/batch.py \
        --task denoise --input scans/ --output results/ [--preset fast] [--device cpu] ...

Run with --help for every option. The work is done by the module's logic (`MedDiffFMLogic.process`),
the same code the Apply button runs; the argument handling is MedDiffFMLib/batch.py.
"""

import os
import sys

import slicer

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if MODULE_DIR not in sys.path:
    sys.path.insert(0, MODULE_DIR)

from MedDiffFMLib import batch  # noqa: E402


def moduleLogic():
    """The loaded module's logic, or a fresh one when the module is not on Slicer's module paths."""
    try:
        logic = slicer.util.getModuleLogic("MedDiffFM")
    except Exception:
        logic = None
    if logic is None:
        import MedDiffFM

        logic = MedDiffFM.MedDiffFMLogic()
    return logic


try:
    code = batch.main(sys.argv[1:], moduleLogic())
except SystemExit as exc:  # argparse's --help and usage errors
    code = exc.code if isinstance(exc.code, int) else 2
    if exc.code and not isinstance(exc.code, int):
        print(exc.code, file=sys.stderr)
except Exception as exc:  # a one-line message, not a traceback, for scripted runs
    print(f"batch.py: error: {exc}", file=sys.stderr)
    code = 1
slicer.util.exit(code)
