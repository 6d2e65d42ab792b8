"""Headless batch runs of a MedDiffFM task over a folder of scans, inside Slicer:

    Slicer --no-main-window --python-script <module folder>/Scripts/batch.py \
        --task denoise --input scans/ --output results/ [--preset fast] [--device cpu] ...

<module folder> is the folder that holds MedDiffFM.py, with MedDiffFMLib/ and Scripts/ beside it:
- in a source checkout: <checkout>/MedDiffFM, so the script is <checkout>/MedDiffFM/Scripts/batch.py;
- in an extension installed from the Extensions Manager: the extension's
  lib/Slicer-<major>.<minor>/qt-scripted-modules folder (under Slicer's extensions folder, shown in
  Application Settings > Extensions), so the script is
  <extensions folder>/MedDiffFM/lib/Slicer-<major>.<minor>/qt-scripted-modules/Scripts/batch.py.
Slicer's Python console prints it: os.path.dirname(slicer.modules.meddifffm.path) + "/Scripts/batch.py".

Run with --help for every option. The work is done by the Slicer module's logic class
(`MedDiffFM.MedDiffFMLogic.process`), the same code the Apply button runs; the argument handling is
MedDiffFMLib/batch.py.
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
