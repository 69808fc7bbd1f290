"""BoneMetSeg: bone metastasis segmentation on CT with a lung-origin probability per lesion and patient.

The panel (Qt) lives here; everything it does to the scene is in the Qt-free ``BoneMetSegLogic``
package beside this file. Inference runs as the ``bonemetseg`` command line in a child process,
polled with a QTimer, so Slicer stays responsive and Cancel ends it at once.
Research use only; not a medical device.
"""

import enum
import html
import importlib
import os
import pathlib
import re
import tempfile
from typing import Annotated

import ctk
import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from BoneMetSegLogic import BoneMetSegLogic, EditedSegmentationError, RunOptions, RunStatus, table_of  # noqa: F401 (re-export)
from BoneMetSegLogic import dependencies
from BoneMetSegLogic.model_card_text import model_card_html
from BoneMetSegLogic.segments import get_tag
from BoneMetSegLogic.types import REF_VOLUME, TABLE_COLUMNS

from BoneMetSegLib.vocabulary import (  # after BoneMetSegLogic, which puts the library on sys.path
    NO_LESION,
    NO_LESION_TEXT_COLOR,
    ORIGIN_TEXT_COLORS,
    ORIGINS,
    TAG_ORIGIN,
)

MODULE_NAME = "BoneMetSeg"
EFFECT_FOLDER = "SegmentEditorBoneMetSegLib"
APPLY_TEXT = "Segment && classify"
ORIGIN_CHOICES = ("",) + ORIGINS  # index in originComboBox -> BoneMetSeg.Origin tag ("" = not set)


#
# BoneMetSeg
#


class BoneMetSeg(ScriptedLoadableModule):
    """Module description; also registers the "Bone metastasis (AI)" Segment Editor effect."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "BoneMetSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["BoneMetSeg developers"]
        self.parent.helpText = (
            "Segments bone metastases on a CT and estimates, per lesion and per patient, the probability "
            "that the primary tumour is a lung cancer (3D Mask R-CNN). Pick the CT, click "
            "<b>Segment &amp; classify</b>, review the lesion table, correct masks in the Segment Editor "
            "(its <i>Bone metastasis (AI)</i> effect adds a missed lesion with one click) and re-score them. "
            "<b>Research use only, not a medical device</b>: the embedded weights learned from synthetic "
            "lesions only; they find large obvious lesions and miss most real metastases (see the model card). "
        )
        self.parent.helpText += self.getDefaultModuleDocumentationLink()
        self.parent.acknowledgementText = (
            "Method after Zhao et al., Automated segmentation and source prediction of bone tumors using "
            "ConvNeXtv2 Fusion based Mask R-CNN, J Bone Oncol 2024. Built on MONAI, SimpleITK and slicerio."
        )
        slicer.app.connect("startupCompleted()", self.registerEditorEffect)

    def registerEditorEffect(self):
        """Register the scripted effect, as Segment Editor extension effects do at startup."""
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        instance = effects.qSlicerSegmentEditorScriptedEffect(None)
        effectPath = os.path.join(os.path.dirname(__file__), EFFECT_FOLDER, "SegmentEditorEffect.py")
        instance.setPythonSource(effectPath.replace("\\", "/"))
        instance.self().register()


#
# Parameter node: the panel's state, saved with the scene.
#


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self):
        return {"auto": "Auto (GPU when available)", "cpu": "CPU", "cuda": "GPU (CUDA)"}[self.value]


@parameterNodeWrapper
class BoneMetSegParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    resultTable: vtkMRMLTableNode
    device: Device = Device.AUTO
    useCustomModel: bool = False
    modelPath: str = ""
    detectionThreshold: Annotated[float, WithinRange(0.0, 0.99)] = 0.0  # 0 = the model card's
    originThreshold: Annotated[float, WithinRange(0.05, 0.95)] = 0.5
    exportDirectory: pathlib.Path = pathlib.Path.home()
    exportCaseId: str = ""


def getParameterNode():
    """The module's singleton parameter node (created on first use)."""
    helper = ScriptedLoadableModuleLogic()
    helper.moduleName = MODULE_NAME
    return BoneMetSegParameterNode(helper.getParameterNode())


def selectInSegmentEditor(segmentationNode, volumeNode, segmentId=None, show=False):
    """Point the Segment Editor at this segmentation and CT (and segment); optionally switch to it."""
    if show:
        slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentationNode)
    if volumeNode is not None:
        if hasattr(editor, "setSourceVolumeNode"):
            editor.setSourceVolumeNode(volumeNode)
        else:  # Slicer < 5.4
            editor.setMasterVolumeNode(volumeNode)
    if segmentId:
        editor.setCurrentSegmentID(segmentId)
    return editor


#
# BoneMetSegWidget
#


class BoneMetSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    POLL_INTERVAL_MS = 300

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._observedTable = None
        self._selectedSegmentId = None

    # --- set-up and life cycle ---------------------------------------------------------------

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/BoneMetSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = BoneMetSegLogic()

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(self.POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollTimer)

        self.ui.progressBar.hide()
        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Files | ctk.ctkPathLineEdit.Readable
        self.ui.modelPathLineEdit.nameFilters = ["BoneMetSeg weights (*.pt)"]
        self.ui.modelPathLineEdit.settingKey = "BoneMetSeg/ModelPath"
        self.ui.lesionTableView.setMRMLScene(slicer.mrmlScene)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.editInSegmentEditorButton.connect("clicked(bool)", self.onEditInSegmentEditor)
        self.ui.rescoreButton.connect("clicked(bool)", self.onRescore)
        self.ui.exportButton.connect("clicked(bool)", self.onExport)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.ui.setOriginButton.connect("clicked(bool)", self.onSetOrigin)
        self.ui.lesionTableView.connect("clicked(QModelIndex)", self.onLesionRowClicked)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)

        self.initializeParameterNode()

    def cleanup(self):
        self._cancelRun()
        self._observeTable(None)
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        # Stop syncing the GUI but keep the node: a run in progress still loads its results.
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event):
        self._cancelRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.inputVolume = firstVolume

    def _disconnectParameterNode(self):
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)

    def setParameterNode(self, parameterNode):
        self._disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    # --- panel state ---------------------------------------------------------------------------

    def updateGUIFromParameterNode(self, caller=None, event=None):
        """Enable/disable, the model card, the table and the patient verdict from the state."""
        pn = self._parameterNode
        if pn is None:
            return
        running = self._run is not None
        self.ui.applyButton.text = "Cancel" if running else APPLY_TEXT
        self.ui.applyButton.enabled = running or pn.inputVolume is not None
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.advancedCollapsibleButton):
            widget.enabled = not running

        self.ui.modelPathLineEdit.enabled = pn.useCustomModel
        if self.ui.modelPathLineEdit.currentPath != pn.modelPath:
            wasBlocked = self.ui.modelPathLineEdit.blockSignals(True)
            self.ui.modelPathLineEdit.currentPath = pn.modelPath
            self.ui.modelPathLineEdit.blockSignals(wasBlocked)
        self.updateModelCard()

        segmentation = pn.outputSegmentation
        table = table_of(segmentation) or (pn.resultTable if segmentation else None)
        self._showTable(table)
        hasResults = table is not None and not running
        self.ui.editInSegmentEditorButton.enabled = segmentation is not None and not running
        self.ui.rescoreButton.enabled = hasResults and pn.inputVolume is not None
        self.ui.exportButton.enabled = segmentation is not None and pn.inputVolume is not None and not running
        self.ui.exportDicomButton.enabled = (segmentation is not None and pn.inputVolume is not None and not running
                                             and bool(pn.inputVolume.GetAttribute("DICOM.instanceUIDs")))
        self.ui.setOriginButton.enabled = segmentation is not None and bool(self._selectedSegmentId)
        self.updatePatientSummary()

    def onModelPathChanged(self, path):
        if self._parameterNode:
            self._parameterNode.modelPath = path

    def updateModelCard(self):
        pn = self._parameterNode
        weights = pn.modelPath.strip() if pn and pn.useCustomModel else None
        if pn and pn.useCustomModel and not weights:
            self.ui.modelCardTextBrowser.setHtml("<i>Choose a weights file (.pt).</i>")
            return
        try:
            self.ui.modelCardTextBrowser.setHtml(model_card_html(weights))
        except Exception as exc:  # shown, not raised: the card is information, the run reports errors
            self.ui.modelCardTextBrowser.setHtml(f"<span style='color:#c0392b'>{html.escape(str(exc))}</span>")

    def _observeTable(self, table):
        if self._observedTable is not None:
            self.removeObserver(self._observedTable, vtk.vtkCommand.ModifiedEvent, self.onTableModified)
        self._observedTable = table
        if table is not None:
            self.addObserver(table, vtk.vtkCommand.ModifiedEvent, self.onTableModified)

    def _showTable(self, table):
        if table is not self._observedTable:
            self._observeTable(table)
            self._selectedSegmentId = None
        view = self.ui.lesionTableView
        shown = view.mrmlTableNode()
        if (shown.GetID() if shown else None) != (table.GetID() if table else None):
            view.setMRMLTableNode(table)
        self._hideSegmentIdColumn()

    def _hideSegmentIdColumn(self):
        table = self._observedTable
        column = table.GetColumnIndex("Segment ID") if table is not None else -1
        if column >= 0:
            self.ui.lesionTableView.setColumnHidden(column, True)

    def onTableModified(self, caller=None, event=None):
        self._hideSegmentIdColumn()
        self.updatePatientSummary()

    def updatePatientSummary(self):
        pn = self._parameterNode
        segmentation = pn.outputSegmentation if pn else None
        if segmentation is None or table_of(segmentation) is None:
            self.ui.patientProbabilityLabel.text = "-"
            self.ui.verdictLabel.text = "-"
            return
        summary = self.logic.patient_summary(segmentation)
        probability = summary.get("lung_origin_probability")
        count = summary.get("n_lesions", 0)
        lesions = f"{count} lesion" + ("" if count == 1 else "s")
        if probability is None:
            self.ui.patientProbabilityLabel.text = f"- ({lesions})"
        else:
            self.ui.patientProbabilityLabel.text = f"{probability:.2f} ({lesions})"
        verdict = summary.get("predicted_origin") or NO_LESION
        colour = ORIGIN_TEXT_COLORS.get(verdict, NO_LESION_TEXT_COLOR)
        self.ui.verdictLabel.text = f"<b style='color:{colour}'>{verdict}</b>"

    # --- Segment & classify ------------------------------------------------------------------

    def onApplyButton(self):
        if self._run is not None:
            self.ui.statusLabel.text = "Cancelling..."
            self._run.cancel()
            return
        pn = self._parameterNode
        ready = False
        with slicer.util.tryWithErrorDisplay("BoneMetSeg could not install its Python requirements."):
            ready = self.ensureDependencies()
        if not ready:
            self.ui.statusLabel.text = "Not started: Python requirements are missing."
            return
        with slicer.util.tryWithErrorDisplay("BoneMetSeg could not start.", waitCursor=True):
            self._run = self.logic.start(pn.inputVolume, RunOptions.from_parameter_node(pn))
        if self._run is None:
            return
        self.ui.statusLabel.text = "Starting..."
        self.ui.progressBar.value = 0
        self.ui.progressBar.show()
        self._pollTimer.start()
        self.updateGUIFromParameterNode()

    def onPollTimer(self):
        if self._run is None:
            self._pollTimer.stop()
            return
        status = self._run.poll()
        self.ui.progressBar.value = int(round(100 * min(1.0, max(0.0, status.fraction))))
        if status.message:
            self.ui.statusLabel.text = status.message
        if status.state == "running":
            return
        self._pollTimer.stop()
        run, self._run = self._run, None
        self.ui.progressBar.hide()
        try:
            if status.state == "done":
                with slicer.util.tryWithErrorDisplay("BoneMetSeg results could not be loaded."):
                    self.loadResults(run)
            elif status.state == "cancelled":
                self.ui.statusLabel.text = "Cancelled: the scene was not changed."
            else:
                self.ui.statusLabel.text = f"Failed: {status.message}"
                slicer.util.errorDisplay(f"BoneMetSeg failed:\n{status.message}", windowTitle="BoneMetSeg")
        finally:
            run.cleanup()  # the run's temporary folder (CT copy and outputs)
            self.updateGUIFromParameterNode()

    def _cancelRun(self):
        if self._run is not None:
            self._run.cleanup()  # ends the child process tree first
            self._run = None
        if getattr(self, "_pollTimer", None) is not None:
            self._pollTimer.stop()

    def loadResults(self, run):
        """Load a finished run; ask before replacing a segmentation that the user edited."""
        pn = self._parameterNode
        target = pn.outputSegmentation
        try:
            segmentation, table = self.logic.load_results(run, target)
        except EditedSegmentationError:
            choice = self.askOverwriteEdited(target)
            if choice == "overwrite":
                segmentation, table = self.logic.load_results(run, target, overwrite_edited=True)
            elif choice == "new":
                segmentation, table = self.logic.load_results(run, None)
            else:
                self.ui.statusLabel.text = "Results not loaded: your edited segmentation was kept."
                return
        pn.outputSegmentation = segmentation
        pn.resultTable = table
        count = self.logic.patient_summary(segmentation).get("n_lesions", 0)
        self.ui.statusLabel.text = f"Done: {count} lesion" + ("" if count == 1 else "s") + " found."

    def askOverwriteEdited(self, segmentationNode):
        """'overwrite', 'new' or 'cancel' for a segmentation holding the user's edits."""
        box = qt.QMessageBox(slicer.util.mainWindow())
        box.setIcon(qt.QMessageBox.Warning)
        box.setWindowTitle("BoneMetSeg: edited segmentation")
        box.setText(f"'{segmentationNode.GetName()}' holds lesions you edited or added.")
        box.setInformativeText("Replace them with the new results, or put the new results in a new segmentation?")
        for name, text, role in (("overwrite", "Overwrite", qt.QMessageBox.DestructiveRole),
                                 ("new", "New segmentation", qt.QMessageBox.AcceptRole),
                                 ("cancel", "Cancel", qt.QMessageBox.RejectRole)):
            button = box.addButton(text, role)
            button.objectName = name
            if name == "new":
                box.setDefaultButton(button)
        box.exec_()
        clicked = box.clickedButton()
        return clicked.objectName if clicked is not None else "cancel"

    # --- first-use dependencies ----------------------------------------------------------------

    def ensureDependencies(self):
        """True when torch and the other requirements are there; otherwise ask, install, re-check."""
        torch = dependencies.torch_status()
        missing = dependencies.missing_requirements()
        if torch == "ok" and not missing:
            return True
        if torch == "too old":
            slicer.util.errorDisplay(dependencies.describe_missing([], torch), windowTitle="BoneMetSeg: PyTorch")
            return False
        if torch == "missing" and not self.installTorch():
            return False
        missing = dependencies.missing_requirements()
        if missing:
            question = dependencies.describe_missing(missing, "ok") + "\n\nInstall them now? This can take a few minutes."
            if not slicer.util.confirmOkCancelDisplay(question, windowTitle="BoneMetSeg: install Python packages"):
                return False
            self.pipInstall(missing)
        still = dependencies.missing_requirements()
        if dependencies.torch_status() != "ok" or still:
            slicer.util.errorDisplay("Some requirements are still missing: " + ", ".join(still or ["torch"])
                                     + ". See the Python console for pip's messages.", windowTitle="BoneMetSeg")
            return False
        return True

    def installTorch(self):
        """Offer the PyTorch extension's installer; explain how when the extension is missing."""
        text = dependencies.describe_missing([], "missing")
        try:
            import PyTorchUtils
        except ImportError:
            slicer.util.errorDisplay(
                text + "\n\nThe PyTorch extension is not installed. Install 'PyTorch' from the Extensions "
                "Manager (View > Extensions Manager), restart Slicer, then click Segment & classify again.",
                windowTitle="BoneMetSeg: PyTorch needed")
            return False
        if not slicer.util.confirmOkCancelDisplay(text + "\n\nInstall PyTorch now? This can take several minutes.",
                                                  windowTitle="BoneMetSeg: install PyTorch"):
            return False
        minimum = dependencies.parse_requirement(dependencies.TORCH_REQUIREMENT).minimum
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                              torchVersionRequirement=f">={minimum}")
        importlib.invalidate_caches()
        return torch is not None

    def pipInstall(self, requirements):
        """pip-install into Slicer's Python with the installed torch pinned (pip cannot replace it)."""
        with tempfile.TemporaryDirectory() as folder:
            constraints = os.path.join(folder, "torch-constraint.txt")
            with open(constraints, "w", encoding="utf-8") as f:
                f.write(dependencies.torch_pin())
            qt.QApplication.setOverrideCursor(qt.Qt.WaitCursor)
            try:
                slicer.util.pip_install(dependencies.pip_install_arguments(requirements, constraints))
            finally:
                qt.QApplication.restoreOverrideCursor()
        importlib.invalidate_caches()

    # --- results: table, Segment Editor, re-score, origin, export -----------------------------

    def _segmentIdOfIndex(self, table, index):
        """Segment ID in the table row shown at a view index (the view may be sorted)."""
        view = self.ui.lesionTableView
        try:
            row = view.tableModel().mrmlTableRowIndex(view.sortFilterProxyModel().mapToSource(index))
        except AttributeError:  # not wrapped: unsorted view, and column names may fill the first row
            row = index.row() if table.GetUseColumnNameAsColumnHeader() else index.row() - 1
        column = table.GetColumnIndex("Segment ID")
        if row < 0 or row >= table.GetNumberOfRows() or column < 0:
            return None
        return table.GetCellText(row, column) or None

    def onLesionRowClicked(self, index):
        """Centre the slice views on the lesion and select its segment."""
        pn = self._parameterNode
        segmentation = pn.outputSegmentation
        table = table_of(segmentation)
        if table is None:
            return
        segmentId = self._segmentIdOfIndex(table, index)
        if not segmentId or segmentation.GetSegmentation().GetSegment(segmentId) is None:
            return
        self._selectedSegmentId = segmentId
        r, a, s = self.logic.lesion_center_ras(segmentation, segmentId)
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
        selectInSegmentEditor(segmentation, pn.inputVolume, segmentId)
        origin = get_tag(segmentation.GetSegmentation().GetSegment(segmentId), TAG_ORIGIN) or ""
        self.ui.originComboBox.currentIndex = ORIGIN_CHOICES.index(origin) if origin in ORIGIN_CHOICES else 0
        self.ui.setOriginButton.enabled = True

    def onEditInSegmentEditor(self):
        pn = self._parameterNode
        selectInSegmentEditor(pn.outputSegmentation, pn.inputVolume, self._selectedSegmentId, show=True)

    def onRescore(self):
        pn = self._parameterNode
        segmentation = pn.outputSegmentation
        with slicer.util.tryWithErrorDisplay("Re-scoring failed.", waitCursor=True):
            updated = self.logic.rescore_edited(pn.inputVolume, segmentation, table_of(segmentation),
                                                RunOptions.from_parameter_node(pn))
            self.ui.statusLabel.text = (f"Re-scored {len(updated)} edited lesion" + ("" if len(updated) == 1 else "s") + "."
                                        if updated else "No edited lesion to re-score.")
        self.updatePatientSummary()

    def onSetOrigin(self):
        """Store the annotator's origin for the selected lesion (segment tag BoneMetSeg.Origin)."""
        segmentation = self._parameterNode.outputSegmentation
        segment = segmentation.GetSegmentation().GetSegment(self._selectedSegmentId or "")
        if segment is None:
            self.ui.statusLabel.text = "Select a lesion in the table first."
            return
        origin = ORIGIN_CHOICES[self.ui.originComboBox.currentIndex]
        if origin:
            segment.SetTag(TAG_ORIGIN, origin)
            self.ui.statusLabel.text = f"{segment.GetName()}: origin set to {origin}."
        else:
            segment.RemoveTag(TAG_ORIGIN)
            self.ui.statusLabel.text = f"{segment.GetName()}: origin not set (the prediction is exported)."

    def onExport(self):
        pn = self._parameterNode
        volume = pn.inputVolume
        caseId = pn.exportCaseId.strip() or re.sub(r"[^A-Za-z0-9_-]+", "_", volume.GetName()).strip("_") or "case"
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            path = self.logic.export_training_case(volume, pn.outputSegmentation, str(pn.exportDirectory), caseId)
            self.ui.statusLabel.text = f"Training case written and validated: {path}"
            slicer.util.infoDisplay(f"Training case written and validated:\n{path}", windowTitle="BoneMetSeg")

    def onExportDicom(self):
        pn = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Export to DICOM failed.", waitCursor=True):
            paths = self.logic.export_dicom(pn.inputVolume, pn.outputSegmentation)
            names = ", ".join(pathlib.Path(p).name for p in paths.values())
            self.ui.statusLabel.text = f"Added to the DICOM database: {names}"
            slicer.util.infoDisplay("The DICOM SEG and SR are in the DICOM database, in the CT's study. Send them to "
                                    "the PACS from the DICOM module (right-click the study > Send to DICOM server).",
                                    windowTitle="BoneMetSeg")


#
# BoneMetSegTest
#


class BoneMetSegTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: the panel's Segment & classify, edit + re-score, click-to-add, export,
    save/reload of tags, the edited-node guard and cancel, on a real CT.

    CT: $BONEMETSEG_TEST_CT when set (any file Slicer loads as a volume), else Slicer's CTChest sample.
    """

    TIMEOUT_S = 900

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_BoneMetSeg_flow()
        self.setUp()
        self.test_BoneMetSeg_cancel()

    # helpers

    def loadCT(self):
        path = os.environ.get("BONEMETSEG_TEST_CT")
        if path:
            return slicer.util.loadVolume(path)
        import SampleData

        return SampleData.SampleDataLogic().downloadCTChest()

    def waitForWidget(self, widget):
        import time

        start = time.time()
        while widget._run is not None:
            self.assertLess(time.time() - start, self.TIMEOUT_S, "Segment & classify did not finish in time")
            slicer.app.processEvents()
            time.sleep(0.1)

    def bonePointRas(self, volumeNode):
        """The bone voxel (> 400 HU) nearest to the volume centre, in RAS."""
        import numpy as np

        array = slicer.util.arrayFromVolume(volumeNode)
        kji = np.argwhere(array > 400)
        self.assertGreater(len(kji), 0, "The test CT has no bone (> 400 HU)")
        centre = np.array(array.shape) / 2.0
        k, j, i = kji[np.argmin(((kji - centre) ** 2).sum(axis=1))]
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return matrix.MultiplyPoint([float(i), float(j), float(k), 1.0])[:3]

    def addSphereSegment(self, segmentationNode, volumeNode, centerRas, radius=6.0):
        sphere = vtk.vtkSphereSource()
        sphere.SetCenter(*centerRas)
        sphere.SetRadius(radius)
        sphere.Update()
        segmentId = segmentationNode.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "Manual lesion")
        return segmentId

    # tests

    def test_BoneMetSeg_flow(self):
        self.delayDisplay("Loading a real CT")
        volume = self.loadCT()
        widget = slicer.modules.bonemetseg.widgetRepresentation().self()
        widget.initializeParameterNode()  # the scene was cleared: the panel needs its node again
        logic = widget.logic
        pn = widget._parameterNode
        pn.inputVolume = volume
        pn.outputSegmentation = None
        pn.device = Device.AUTO

        self.delayDisplay("Segment & classify from the panel")
        self.assertTrue(widget.ui.applyButton.enabled)
        widget.ui.applyButton.click()
        self.assertEqual(widget.ui.applyButton.text, "Cancel")
        self.waitForWidget(widget)
        self.assertEqual(widget.ui.applyButton.text, APPLY_TEXT)
        segmentation = pn.outputSegmentation
        self.assertIsNotNone(segmentation, widget.ui.statusLabel.text)
        table = table_of(segmentation)
        self.assertIsNotNone(table)
        self.assertEqual([table.GetColumnName(c) for c in range(table.GetNumberOfColumns())], TABLE_COLUMNS)
        nSegments = segmentation.GetSegmentation().GetNumberOfSegments()
        self.assertEqual(table.GetNumberOfRows(), nSegments)
        self.assertEqual(logic.patient_summary(segmentation)["n_lesions"], nSegments)
        self.assertEqual(widget.ui.lesionTableView.mrmlTableNode().GetID(), table.GetID())
        self.assertEqual(segmentation.GetNodeReferenceID(REF_VOLUME), volume.GetID())
        for index in range(nSegments):
            segment = segmentation.GetSegmentation().GetNthSegment(index)
            self.assertTrue(segment.GetName().startswith("Lesion "))
            for key in ("BoneMetSeg.DetectionScore", "BoneMetSeg.LungOriginProbability", "BoneMetSeg.PredictedOrigin",
                        "DICOM.SegmentAlgorithmType", "DICOM.SegmentAlgorithmName"):
                self.assertTrue(segment.HasTag(key), f"{segment.GetName()} has no tag {key}")
        self.assertFalse(logic.is_edited(segmentation))

        self.delayDisplay("Edit: add a lesion by hand and re-score it")
        centre = self.bonePointRas(volume)
        manualId = self.addSphereSegment(segmentation, volume, centre)
        self.assertTrue(logic.is_edited(segmentation))
        updated = logic.rescore_edited(volume, segmentation, table, RunOptions.from_parameter_node(pn))
        self.assertIn(manualId, updated)
        self.assertEqual(table.GetNumberOfRows(), nSegments + 1)
        self.assertTrue(segmentation.GetSegmentation().GetSegment(manualId).HasTag("BoneMetSeg.LungOriginProbability"))

        self.delayDisplay("A table row click centres the views on its lesion")
        manualRow = [table.GetCellText(r, table.GetColumnIndex("Segment ID")) for r in range(table.GetNumberOfRows())].index(manualId)
        viewRow = manualRow if table.GetUseColumnNameAsColumnHeader() else manualRow + 1
        widget.onLesionRowClicked(widget.ui.lesionTableView.model().index(viewRow, 0))
        self.assertEqual(widget._selectedSegmentId, manualId)
        red = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        self.assertIsNotNone(red, "run the self-test in Slicer with its main window (slice views)")
        lesionCentre = logic.lesion_center_ras(segmentation, manualId)
        self.assertAlmostEqual(red.GetSliceOffset(), lesionCentre[2], delta=max(volume.GetSpacing()))

        self.delayDisplay("Annotator origin and export as a training case")
        widget.ui.originComboBox.currentIndex = ORIGIN_CHOICES.index("lung")
        widget.onSetOrigin()
        self.assertEqual(get_tag(segmentation.GetSegmentation().GetSegment(manualId), TAG_ORIGIN), "lung")
        with tempfile.TemporaryDirectory() as dataset:
            casePath = logic.export_training_case(volume, segmentation, dataset, "selftest_case")
            self.assertTrue(pathlib.Path(casePath).exists())

            self.delayDisplay("Saved .seg.nrrd keeps the tags")
            segPath = os.path.join(dataset, "saved.seg.nrrd")
            self.assertTrue(slicer.util.saveNode(segmentation, segPath))
            reloaded = slicer.util.loadSegmentation(segPath)
            segment = reloaded.GetSegmentation().GetSegment(manualId)
            self.assertIsNotNone(segment)
            self.assertEqual(get_tag(segment, TAG_ORIGIN), "lung")
            self.assertTrue(segment.HasTag("BoneMetSeg.DetectionScore"))

        self.delayDisplay("Click-to-add effect is registered and adds at most one lesion")
        editor = selectInSegmentEditor(segmentation, volume)
        editor.setActiveEffectByName("Bone metastasis (AI)")
        self.assertIsNotNone(editor.activeEffect(), "Segment Editor effect 'Bone metastasis (AI)' not registered")
        before = segmentation.GetSegmentation().GetNumberOfSegments()
        added = logic.add_lesion_at_point(volume, segmentation, table, centre, RunOptions.from_parameter_node(pn))
        after = segmentation.GetSegmentation().GetNumberOfSegments()
        self.assertEqual(after, before + (1 if added else 0))
        editor.setActiveEffect(None)

        self.delayDisplay("A second run does not overwrite the edited segmentation")
        run = logic.start(volume, RunOptions.from_parameter_node(pn))
        status = run.wait(timeout=self.TIMEOUT_S)
        self.assertEqual(status.state, "done", status.message)
        with self.assertRaises(EditedSegmentationError):
            logic.load_results(run, segmentation)
        self.assertIsNotNone(segmentation.GetSegmentation().GetSegment(manualId))
        newSegmentation, _ = logic.load_results(run, None)
        run.cleanup()
        self.assertNotEqual(newSegmentation.GetID(), segmentation.GetID())
        self.delayDisplay("Flow test passed")

    def test_BoneMetSeg_cancel(self):
        volume = self.loadCT()
        logic = BoneMetSegLogic()
        run = logic.start(volume, RunOptions())
        self.assertEqual(run.poll().state, "running")
        run.cancel()
        status = run.wait(timeout=30)
        run.cleanup()
        self.assertEqual(status.state, "cancelled")
        self.delayDisplay("Cancel test passed")
