"""Static checks of the Slicer extension's Qt parts (no Slicer here): the .ui, what the widget and the
effect use from it and from the Logic, the CMake packaging, the catalog entry and the icons."""

from __future__ import annotations

import ast
import json
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO_ROOT / "BoneMetSeg"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "BoneMetSeg.ui"
WIDGET_FILE = MODULE_DIR / "BoneMetSeg.py"
EFFECT_FILE = MODULE_DIR / "SegmentEditorBoneMetSegLib" / "SegmentEditorEffect.py"
ICONS = [REPO_ROOT / "Resources" / "Icons" / "BoneMetSeg.png", MODULE_DIR / "Resources" / "Icons" / "BoneMetSeg.png"]

# Interface C (INTERFACES.md): what the Qt code may call on the Logic and on a run.
LOGIC_METHODS = {"start", "load_results", "is_edited", "rescore_edited", "add_lesion_at_point",
                 "patient_summary", "lesion_center_ras", "export_training_case", "export_dicom"}
RUN_METHODS = {"poll", "cancel", "wait", "cleanup"}  # cleanup: SegmentationRun's addition (temp folder)

# Widget-name suffix -> the classes that name may have.
NAME_CLASSES = {
    "CollapsibleButton": {"ctkCollapsibleButton"}, "DirectoryButton": {"ctkDirectoryButton"},
    "Button": {"QPushButton"}, "Selector": {"qMRMLNodeComboBox"}, "Label": {"QLabel"},
    "ComboBox": {"QComboBox"}, "CheckBox": {"QCheckBox"}, "TableView": {"qMRMLTableView"},
    "ProgressBar": {"QProgressBar"}, "SpinBox": {"QDoubleSpinBox", "QSpinBox"},
    "SliderWidget": {"ctkSliderWidget"}, "PathLineEdit": {"ctkPathLineEdit"}, "LineEdit": {"QLineEdit", "ctkPathLineEdit"},
    "TextBrowser": {"QTextBrowser"}, "BoneMetSeg": {"qMRMLWidget"},
}
# Parameter node field type -> widget classes the parameterNodeWrapper can connect it to.
TYPE_CLASSES = {
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"}, "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
    "vtkMRMLTableNode": {"qMRMLNodeComboBox"}, "Device": {"QComboBox"}, "bool": {"QCheckBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"}, "str": {"QLineEdit"},
    "pathlib.Path": {"ctkDirectoryButton", "ctkPathLineEdit"},
}


@pytest.fixture(scope="module")
def ui():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    return root, widgets


def _suffix_classes(name):
    for suffix in sorted(NAME_CLASSES, key=len, reverse=True):
        if name.endswith(suffix) or name == suffix[0].lower() + suffix[1:]:
            return NAME_CLASSES[suffix]
    return None


def test_ui_is_qt_designer_xml(ui):
    root, widgets = ui
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == "BoneMetSeg"
    top = root.find("widget")
    assert (top.get("class"), top.get("name")) == ("qMRMLWidget", "BoneMetSeg")
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    for widget in widgets.values():
        cls = widget.get("class")
        assert cls.startswith("Q") or cls in declared, f"{cls} is not declared in <customwidgets>"
    for connection in root.iter("connection"):
        assert connection.findtext("sender") in widgets and connection.findtext("receiver") in widgets


def test_every_widget_name_says_its_class(ui):
    _, widgets = ui
    for name, widget in widgets.items():
        expected = _suffix_classes(name)
        assert expected is not None, f"widget name {name!r} has no known suffix"
        assert widget.get("class") in expected, f"{name} is a {widget.get('class')}, expected one of {expected}"


def _ui_attributes(path):
    """Names used as ``self.ui.<name>`` / ``widget.ui.<name>`` in a Python file."""
    tree = ast.parse(path.read_text())
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}


@pytest.mark.parametrize("path", [WIDGET_FILE, EFFECT_FILE], ids=lambda p: p.name)
def test_code_uses_only_widgets_of_the_ui(ui, path):
    _, widgets = ui
    used = _ui_attributes(path)
    assert used <= set(widgets), f"not in the .ui: {sorted(used - set(widgets))}"
    if path == WIDGET_FILE:
        assert {"applyButton", "progressBar", "statusLabel", "lesionTableView", "verdictLabel",
                "patientProbabilityLabel", "editInSegmentEditorButton", "rescoreButton", "exportButton"} <= used


def _parameter_fields():
    tree = ast.parse(WIDGET_FILE.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "BoneMetSegParameterNode")
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in cls.decorator_list)
    fields = {}
    for item in cls.body:
        if isinstance(item, ast.AnnAssign):
            annotation = item.annotation
            ranges = None
            if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value) == "Annotated":
                base, *extra = annotation.slice.elts
                ranges = next([ast.literal_eval(a) for a in e.args] for e in extra if ast.unparse(e.func) == "WithinRange")
                annotation = base
            fields[item.target.id] = (ast.unparse(annotation), ranges)
    return fields


def _number(widget, prop):
    element = widget.find(f"property[@name='{prop}']")
    return None if element is None else float(element[0].text)


def test_parameter_names_match_the_parameter_node(ui):
    _, widgets = ui
    fields = _parameter_fields()
    bound = {}
    for name, widget in widgets.items():
        prop = widget.find("property[@name='SlicerParameterName']")
        if prop is not None:
            bound[prop.findtext("string")] = widget
    assert set(bound) <= set(fields), f"unknown parameters: {set(bound) - set(fields)}"
    assert {"inputVolume", "outputSegmentation", "device", "useCustomModel", "detectionThreshold",
            "originThreshold", "exportDirectory", "exportCaseId"} <= set(bound)
    for parameter, widget in bound.items():
        type_name, ranges = fields[parameter]
        assert widget.get("class") in TYPE_CLASSES[type_name], (parameter, widget.get("class"), type_name)
        if ranges:  # the .ui's own range agrees with the WithinRange the wrapper applies
            assert [_number(widget, "minimum"), _number(widget, "maximum")] == ranges, parameter


def _calls_on(tree, receivers):
    """Method names called as ``<receiver>.<method>(...)`` for receiver expressions in ``receivers``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if ast.unparse(node.func.value) in receivers:
                found.add(node.func.attr)
    return found


@pytest.mark.parametrize("path", [WIDGET_FILE, EFFECT_FILE], ids=lambda p: p.name)
def test_code_calls_only_interface_c(path):
    from BoneMetSegLogic import BoneMetSegLogic
    from BoneMetSegLogic.cli_process import SegmentationRun

    tree = ast.parse(path.read_text())
    logic_calls = _calls_on(tree, {"self.logic", "logic", "self.logic()", "widget.logic"})
    run_calls = _calls_on(tree, {"run", "self._run"})
    assert logic_calls, "no Logic call found: the check would be empty"
    assert logic_calls <= LOGIC_METHODS, f"not in interface C: {logic_calls - LOGIC_METHODS}"
    assert run_calls <= RUN_METHODS, f"not in interface C: {run_calls - RUN_METHODS}"
    for method in logic_calls:
        assert callable(getattr(BoneMetSegLogic, method, None)), f"BoneMetSegLogic.{method} does not exist"
    for method in run_calls:
        assert callable(getattr(SegmentationRun, method, None)), f"SegmentationRun.{method} does not exist"
    if path == WIDGET_FILE:
        assert {"start", "load_results", "rescore_edited", "lesion_center_ras", "export_training_case",
                "patient_summary"} <= logic_calls and {"poll", "cancel"} <= run_calls
    else:
        assert logic_calls == {"add_lesion_at_point"}


@pytest.mark.parametrize("path", [WIDGET_FILE, EFFECT_FILE], ids=lambda p: p.name)
def test_names_imported_from_the_logic_exist(path):
    import importlib

    tree = ast.parse(path.read_text())
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
               and n.module.startswith("BoneMetSegLogic")]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module)
        for alias in node.names:
            if not hasattr(module, alias.name):  # a submodule: ``from BoneMetSegLogic import dependencies``
                importlib.import_module(f"{node.module}.{alias.name}")


def _cmake_set(text, variable):
    match = re.search(rf"set\({variable}\s+(.*?)\)\s*$", text, re.S | re.M)
    assert match, variable
    return [v.strip('"') for v in re.findall(r'"[^"]*"|\S+', match.group(1))]


def test_module_cmakelists_lists_every_file_and_only_existing_ones():
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    listed = set()
    for variable in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES"):
        for entry in _cmake_set(text, variable):
            path = entry.replace("${MODULE_NAME}", "BoneMetSeg")
            assert (MODULE_DIR / path).is_file(), f"{variable} lists a missing file: {path}"
            listed.add(path)
    shipped = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".ui", ".png")}
    assert shipped <= listed, f"not packaged: {sorted(shipped - listed)}"
    # The library and its embedded weights are copied and installed beside the module.
    assert "${BONEMETSEGLIB_SOURCE_DIR}/weights/*.pt" in text and "install(" in text
    assert list((REPO_ROOT / "BoneMetSegLib" / "weights").glob("*.pt"))


def test_extension_cmakelists_metadata():
    text = (REPO_ROOT / "CMakeLists.txt").read_text()
    raw = _cmake_set(text, "BONEMETSEG_RAW_URL")[0]
    values = {v: " ".join(_cmake_set(text, v)) for v in (
        "EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS")}
    assert all(values.values())
    assert values["EXTENSION_CATEGORY"] == "Segmentation" and values["EXTENSION_DEPENDS"] == "PyTorch"
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in values[variable].split():
            relative = url.replace("${BONEMETSEG_RAW_URL}", raw).removeprefix(raw + "/")
            assert (REPO_ROOT / relative).is_file(), f"{variable} points to a file not in the repository: {relative}"
    assert re.search(r"^add_subdirectory\(BoneMetSeg\)", text, re.M)


def test_catalog_entry():
    entry = json.loads((REPO_ROOT / "BoneMetSeg.json").read_text())
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "build_subdirectory", "enabled", "tier"}  # slicer-extension-catalog-entry-schema-v1.0.1
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.1.json#")
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert entry["category"] == _cmake_set(cmake, "EXTENSION_CATEGORY")[0]
    assert entry["build_dependencies"] == _cmake_set(cmake, "EXTENSION_DEPENDS")
    assert entry["scm_url"] == _cmake_set(cmake, "BONEMETSEG_REPOSITORY_URL")[0]
    assert entry["scm_type"] == "git" and isinstance(entry["enabled"], bool) and 1 <= entry["tier"] <= 5


@pytest.mark.parametrize("path", ICONS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_icon_is_a_128_px_png_with_a_picture(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (128, 128)
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    opaque = pixels[..., 3] > 0.5
    colours = np.unique((pixels[opaque][:, :3] * 255).round().astype(int), axis=0)
    assert opaque.mean() > 0.5 and len(colours) > 20, "the icon looks blank"
    assert data == ICONS[0].read_bytes()
