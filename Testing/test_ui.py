"""Static checks of the Slicer module's GUI, which cannot run without the Slicer application: every
widget MedDiffFM.py uses exists in MedDiffFM.ui with a class that fits its use, every parameter
binding names a parameter-node field the widget can show, and every task has its panel."""

from __future__ import annotations

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "MedDiffFM"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedDiffFM.ui"
MODULE_FILE = MODULE_DIR / "MedDiffFM.py"
sys.path.insert(0, str(MODULE_DIR))

from MedDiffFMLib.tasks import TASKS  # noqa: E402

# What a widget's name promises about its class (longest suffix wins).
SUFFIX_CLASSES = {
    "CollapsibleButton": {"ctkCollapsibleButton"},
    "SegmentSelector": {"qMRMLSegmentSelectorWidget"},
    "Button": {"QPushButton"},
    "Selector": {"qMRMLNodeComboBox", "QComboBox"},
    "Label": {"QLabel"},
    "ProgressBar": {"QProgressBar"},
    "SpinBox": {"QSpinBox", "QDoubleSpinBox"},
    "SliderWidget": {"ctkSliderWidget"},
    "CheckBox": {"QCheckBox"},
}
# Members only some widget classes have: using one on a widget pins its class.
MEMBER_CLASSES = {
    "addItem": {"QComboBox"}, "itemData": {"QComboBox"}, "findData": {"QComboBox"},
    "currentIndexChanged": {"QComboBox"}, "setCurrentIndex": {"QComboBox"}, "blockSignals": None,
    "currentSegmentChanged": {"qMRMLSegmentSelectorWidget"}, "setCurrentSegmentID": {"qMRMLSegmentSelectorWidget"},
    "contentsCollapsed": {"ctkCollapsibleButton"}, "collapsed": {"ctkCollapsibleButton"},
    "setRange": {"QProgressBar", "QSpinBox", "QDoubleSpinBox"}, "clicked": {"QPushButton", "QCheckBox"},
    "setCurrentNode": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
    "currentNodeChanged": {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"},
}
# Which widget classes parameterNodeWrapper's connectGui binds to which field types.
BINDABLE = {
    "node": {"qMRMLNodeComboBox"},
    "choice": {"QComboBox"},
    "bool": {"QCheckBox"},
    "int": {"QSpinBox", "ctkSliderWidget"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"},
    "str": {"QLineEdit"},
}


@pytest.fixture(scope="module")
def ui():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    bindings = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[w.get("name")] = prop.find("string").text
    titles = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "text" and prop.find("string") is not None:
                titles[w.get("name")] = prop.find("string").text
    custom = {c.find("class").text for c in root.iter("customwidget")}
    scene_receivers = {c.find("receiver").text for c in root.iter("connection")
                       if c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    return {"widgets": widgets, "bindings": bindings, "titles": titles, "custom": custom,
            "scene_receivers": scene_receivers, "root": root}


@pytest.fixture(scope="module")
def module():
    tree = ast.parse(MODULE_FILE.read_text())
    used: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        # self.ui.<name>[.<member>]
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
            used.setdefault(node.attr, set())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui":
            used.setdefault(node.value.attr, set()).add(node.attr)
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                constants[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    fields = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "MedDiffFMParameterNode":
            for item in node.body:
                if isinstance(item, ast.AnnAssign):
                    fields[item.target.id] = ast.unparse(item.annotation)
    return {"used": used, "constants": constants, "fields": fields, "tree": tree}


def _suffix_classes(name: str) -> set[str] | None:
    for suffix in sorted(SUFFIX_CLASSES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUFFIX_CLASSES[suffix]
    return None


def test_every_widget_the_module_uses_exists_with_a_fitting_class(ui, module):
    used = dict(module["used"])
    # Widgets reached through getattr(self.ui, name) from the module's tables.
    for name in module["constants"]["PANELS"].values():
        used.setdefault(name, set()).update({"contentsCollapsed", "collapsed"})
    for name in module["constants"]["SEGMENT_SELECTORS"].values():
        used.setdefault(name, set()).update({"currentSegmentChanged", "setCurrentSegmentID"})
    assert len(used) >= 15
    for name, members in used.items():
        assert name in ui["widgets"], f"MedDiffFM.py uses self.ui.{name}, which MedDiffFM.ui lacks"
        cls = ui["widgets"][name]
        expected = _suffix_classes(name)
        assert expected is None or cls in expected, f"{name} is a {cls}; its name promises {expected}"
        for member in members:
            allowed = MEMBER_CLASSES.get(member)
            assert allowed is None or cls in allowed, f"self.ui.{name}.{member} needs one of {allowed}, not {cls}"


def test_every_widget_class_in_the_ui_is_declared_or_standard(ui):
    for name, cls in ui["widgets"].items():
        assert cls.startswith("Q") or cls in ui["custom"], f"{name}: {cls} has no <customwidget> entry"
        assert _suffix_classes(name) is None or cls in _suffix_classes(name), f"{name} is a {cls}"
    for name, cls in ui["widgets"].items():
        if cls.startswith("qMRML") and name != ui["root"].find("widget").get("name"):
            assert name in ui["scene_receivers"], f"{name} never gets the MRML scene"


def _kind(annotation: str) -> str:
    if annotation.startswith("vtkMRML"):
        return "node"
    if "Choice(" in annotation:
        return "choice"
    for kind in ("bool", "int", "float", "str"):
        if annotation == kind or annotation.startswith(f"Annotated[{kind},"):
            return kind
    raise AssertionError(f"unexpected parameter type {annotation}")


def test_parameter_bindings_name_fields_their_widgets_can_show(ui, module):
    fields = module["fields"]
    bound = {}
    for widget, parameter in ui["bindings"].items():
        assert parameter in fields, f"{widget} binds {parameter!r}, which MedDiffFMParameterNode lacks"
        cls = ui["widgets"][widget]
        kind = _kind(fields[parameter])
        assert cls in BINDABLE[kind], f"{widget} ({cls}) cannot show {parameter}: {fields[parameter]}"
        if cls == "ctkSliderWidget":
            assert "WithinRange" in fields[parameter], f"a slider needs a bounded {parameter}"
        assert parameter not in bound, f"{parameter} is bound twice"
        bound[parameter] = widget
    # The rest are kept by hand in MedDiffFM.py: the open panel, the model list, the segment selectors.
    segments = module["constants"]["SEGMENT_SELECTORS"]
    by_hand = {"task", "model"} | {f"{t}Segmentation" for t in segments} | {f"{t}SegmentID" for t in segments}
    assert set(fields) - set(bound) == by_hand


def _button_opens_editor_for(tree, button: str) -> str | None:
    """The task in `self.ui.<button>.clicked.connect(lambda: self.onOpenSegmentEditor(<task>))`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect" \
                and isinstance(node.func.value, ast.Attribute) and isinstance(node.func.value.value, ast.Attribute) \
                and node.func.value.value.attr == button and node.args and isinstance(node.args[0], ast.Lambda):
            call = node.args[0].body
            if isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "onOpenSegmentEditor":
                return ast.literal_eval(call.args[0])
    return None


def test_every_task_has_its_panel_with_its_title_and_segment_tools(ui, module):
    panels = module["constants"]["PANELS"]
    segments = module["constants"]["SEGMENT_SELECTORS"]
    assert set(panels) == set(TASKS)
    for task, info in TASKS.items():
        name = panels[task]
        assert ui["widgets"].get(name) == "ctkCollapsibleButton"
        assert ui["titles"][name] == info.title
        if info.segment:
            assert task in segments and ui["widgets"][segments[task]] == "qMRMLSegmentSelectorWidget"
            assert ui["widgets"].get(f"{task}SegmentEditorButton") == "QPushButton"
            assert _button_opens_editor_for(module["tree"], f"{task}SegmentEditorButton") == task
    # The shared controls the issue asks for.
    for name in ("inputSelector", "modelSelector", "modelCardLabel", "deviceSelector", "presetSelector",
                 "applyButton", "cancelButton", "progressBar", "statusLabel", "outputSelector"):
        assert name in ui["widgets"]
    output = ui["root"].find(".//widget[@name='outputSelector']")
    props = {p.get("name"): p for p in output.findall("property")}
    assert props["noneDisplay"].find("string").text == "Create new volume"


def test_the_module_imports_no_torch_and_of_the_engine_only_its_declarations():
    """Slicer's GUI process must not load torch; the engine runs in a child process. Of the engine, the
    module reads only the torch-free settings declarations (MedDiffFMLogic.settings), through
    runner.import_engine_module (test_slicer_settings.py runs the imports in a fresh interpreter)."""
    files = [MODULE_FILE, *sorted((MODULE_DIR / "MedDiffFMLib").glob("*.py")), MODULE_DIR / "Scripts" / "batch.py"]
    engine_imports = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"torch", "monai", "SimpleITK"}, f"{path.name} imports {name}"
                if top == "MedDiffFMLogic":
                    engine_imports.add((path.name, name))
    assert engine_imports and all(name.startswith("MedDiffFMLogic.settings") for _, name in engine_imports)
    assert {file for file, _ in engine_imports} == {"tasks.py"}  # one door: tasks.py, after import_engine_module
    assert not re.search(r"^\s*import torch", MODULE_FILE.read_text(), re.M)


# ------------------------------------------------- what the GUI does around installing and cancelling
# The Widget and the Logic need the Slicer app; these check the code paths the defects were in, while
# the decisions themselves are tested as plain functions (test_slicer_dependencies.py, test_runner.py).


def _function(tree, cls: str, name: str) -> ast.FunctionDef:
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(n for n in klass.body if isinstance(n, ast.FunctionDef) and n.name == name)


def _calls(node, attr: str) -> list[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == attr]


def test_install_failures_of_any_kind_end_in_a_dialog(module):
    method = _function(module["tree"], "MedDiffFMWidget", "_ensureDependencies")
    [call] = _calls(method, "ensureDependencies")
    tries = [t for t in ast.walk(method) if isinstance(t, ast.Try) and any(n is call for b in t.body for n in ast.walk(b))]
    assert tries, "ensureDependencies is called outside a try"
    caught = {ast.unparse(h.type) for h in tries[0].handlers}
    assert {"deps.InstallError", "Exception"} <= caught
    for handler in tries[0].handlers:
        assert _calls(handler, "errorDisplay"), f"the {ast.unparse(handler.type)} handler shows no dialog"
    start = _function(module["tree"], "MedDiffFMWidget", "_start")
    assert _calls(start, "_ensureDependencies")


def test_apply_is_off_while_installing_and_a_closed_scene_stops_the_start(module):
    method = _function(module["tree"], "MedDiffFMWidget", "_ensureDependencies")
    source = ast.unparse(method)
    assert source.index("self._installing = True") < source.index("self.logic.ensureDependencies")
    assert "finally" in source and source.rindex("self._installing = False") > source.index("self.logic.ensureDependencies")
    check = ast.unparse(_function(module["tree"], "MedDiffFMWidget", "_checkCanApply"))
    assert "panel.apply_state(" in check  # the decision: test_slicer_dependencies.py
    assert "installing=self._installing" in check and "unsupported=self._unsupported" in check
    assert "self.ui.applyButton.enabled = state.enabled" in check
    start = ast.unparse(_function(module["tree"], "MedDiffFMWidget", "_start"))
    # The panel's settings are read after the installation, once the scene is known to be the same.
    assert start.index("self._ensureDependencies()") < start.index("self._sceneCloses != closes") \
        < start.index("taskParameters(")
    close = ast.unparse(_function(module["tree"], "MedDiffFMWidget", "onSceneStartClose"))
    assert "self._sceneCloses += 1" in close


def test_the_gui_never_waits_for_the_engines_processes(module):
    for name in ("onCancelButton", "cleanup"):
        method = _function(module["tree"], "MedDiffFMWidget", name)
        cancels = _calls(method, "cancel")
        assert cancels, name
        for call in cancels:
            assert any(k.arg == "wait" and isinstance(k.value, ast.Constant) and k.value.value is False
                       for k in call.keywords), f"{name}: {ast.unparse(call)} waits for the process tree"
        assert not _calls(method, "processEvents")


def test_torch_is_installed_without_importing_it_and_without_torchvision(module):
    """PyTorchUtilsLogic.installTorch() imports torch into Slicer's process and adds torchvision."""
    text = MODULE_FILE.read_text()
    assert not _calls(module["tree"], "installTorch") and not _calls(module["tree"], "importTorch")
    assert "Logic().torch" not in text and "torchLogic" not in text
    install = _function(module["tree"], "MedDiffFMLogic", "_installTorch")
    code = install.body[1:] if isinstance(install.body[0].value, ast.Constant) else install.body  # no docstring
    assert not any("torchvision" in ast.unparse(statement) for statement in code)
    assert _calls(install, "torch_install_command") and _calls(install, "logProcessOutput")


def test_runs_use_slicers_temporary_folder_and_the_in_app_test_installs_deliberately(module):
    processor = _function(module["tree"], "MedDiffFMLogic", "processor")
    [call] = [c for c in ast.walk(processor) if isinstance(c, ast.Call) and ast.unparse(c.func) == "Processor"]
    temp = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("temp_root", "")
    assert temp.startswith("slicer.util.tempDirectory(")
    packages = ast.unparse(_function(module["tree"], "MedDiffFMLogic", "_installPackages"))
    assert "skip_in_testing=not installInTesting" in packages
    test = ast.unparse(_function(module["tree"], "MedDiffFMTest", "_installEngineDependencies"))
    assert "ensureDependencies(confirm=False, installInTesting=True)" in test and "skipTest(" in test
    tasks = ast.unparse(_function(module["tree"], "MedDiffFMTest", "test_every_task_on_a_small_volume"))
    assert tasks.index("self._installEngineDependencies()") < tasks.index("logic.process(")
