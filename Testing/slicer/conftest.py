"""Fixtures for the module Logic on the real Slicer MRML engine (the ``slicer-core`` wheel, no Qt).

``slicer_app``: one scene per session with the application logic and the Colors, Volumes,
Segmentations and SubjectHierarchy module logics registered (what Slicer's core application sets
up); ``scene``: that scene, cleared after each test. ``logic_run`` runs the real CLI once per session
(through the Logic) on a real-CT crop holding a planted lesion and keeps its output files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[2] / "BoneMetSeg"
if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))  # as Slicer does for a scripted module's folder

LOW_THRESHOLD = 0.1  # whole-CT runs here use a low threshold: the CT holds one planted lesion


class SlicerCore:
    """The core of a Slicer application: scene, application logic, module logics."""

    def __init__(self):
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        colors = self.app_logic.GetColorLogic()
        colors.SetMRMLScene(self.scene)
        colors.AddDefaultColorNodes()
        self.app_logic.SetModuleLogic("Colors", colors)
        self.app_logic.SetSliceLogics(vtkCollection())
        self.app_logic.SetViewLogics(vtkCollection())
        self.logics = {}
        for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                          ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                          ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic)):
            logic = cls()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    def load_volume(self, path: Path, name: str = "CT"):
        node = self.logics["Volumes"].AddArchetypeVolume(str(path), name)
        assert node is not None, f"Slicer could not read {path}"
        return node


@pytest.fixture(scope="session")
def slicer_app():
    return SlicerCore()


@pytest.fixture
def scene(slicer_app):
    yield slicer_app.scene
    slicer_app.scene.Clear(False)  # keeps singletons (colour tables, subject hierarchy)


@pytest.fixture(scope="session")
def ct_case(lesion_case):
    """A 128 mm real-CT crop (TotalSegmentator example, 1 mm) with one planted lesion; its true LPS box."""
    return lesion_case


@pytest.fixture(scope="session")
def logic_run(slicer_app, ct_case):
    """``BoneMetSegLogic.start`` on ``ct_case`` through the real CLI subprocess, polled to the end,
    once per session: ``{"run", "statuses", "files"}``; the output files live until the session ends."""
    import time

    from BoneMetSegLogic import BoneMetSegLogic, RunOptions

    volume = slicer_app.load_volume(ct_case["path"])
    run = BoneMetSegLogic(slicer_app.scene).start(volume, RunOptions(device="cpu", detection_threshold=LOW_THRESHOLD))
    statuses = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        statuses.append(run.poll())
        if statuses[-1].finished:
            break
        time.sleep(0.2)
    slicer_app.scene.Clear(False)
    yield {"run": run, "statuses": statuses}
    run.cleanup()


def reload_run(slicer_app, ct_case, logic_run):
    """A fresh volume node of the CT and the finished run re-pointed at it (for load_results)."""
    from BoneMetSegLogic import SegmentationRun

    volume = slicer_app.load_volume(ct_case["path"])
    run = logic_run["run"]
    return volume, SegmentationRun.from_files(run.seg_path, run.report_path, volume.GetID())
