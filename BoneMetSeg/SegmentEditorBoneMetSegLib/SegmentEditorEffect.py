"""Segment Editor effect "Bone metastasis (AI)": click on a lesion the model missed to add it.

The click runs the model on a crop around the point (BoneMetSegLogic.add_lesion_at_point: the best
detection whose box holds the point, at a lower threshold) and adds it as a new "Lesion N" segment
with its scores, in the lesion table when the segmentation has one.
"""

import logging
import os

import qt
import vtk

import slicer
from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

EFFECT_NAME = "Bone metastasis (AI)"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Click-to-add a bone metastasis with the BoneMetSeg model."""

    def __init__(self, scriptedEffect):
        scriptedEffect.name = EFFECT_NAME
        scriptedEffect.perSegment = False  # adds a new segment; does not modify the selected one
        scriptedEffect.requireSegments = False
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._logic = None

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return ("<html>Click on a bone metastasis that the model missed, in a slice view. The BoneMetSeg "
                "model segments it (inference on a crop around the click) and adds it as a new lesion "
                "with its lung-origin probability. Settings (device, model, origin threshold) come from "
                "the BoneMetSeg module panel.<br>Research use only.</html>")

    def setupOptionsFrame(self):
        self.statusLabel = qt.QLabel("Click on a missed lesion in a slice view.")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

    def createCursor(self, widget):
        return qt.QCursor(qt.Qt.CrossCursor)

    def logic(self):
        if self._logic is None:
            from BoneMetSegLogic import BoneMetSegLogic

            self._logic = BoneMetSegLogic()
        return self._logic

    def processInteractionEvents(self, callerInteractor, eventId, viewWidget):
        if eventId != vtk.vtkCommand.LeftButtonPressEvent or viewWidget.className() != "qMRMLSliceWidget":
            return False
        editorNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = editorNode.GetSegmentationNode()
        volumeNode = (editorNode.GetSourceVolumeNode() if hasattr(editorNode, "GetSourceVolumeNode")
                      else editorNode.GetMasterVolumeNode())
        if segmentationNode is None or volumeNode is None:
            self.statusLabel.text = "Select a segmentation and the CT (source volume) first."
            return True
        pointRas = self.xyToRas(callerInteractor.GetEventPosition(), viewWidget)
        self.addLesionAt(volumeNode, segmentationNode, pointRas)
        return True

    def addLesionAt(self, volumeNode, segmentationNode, pointRas):
        """Run click-to-add at ``pointRas``; returns the new segment ID or None."""
        import BoneMetSeg  # the panel's parameter node (device, model, thresholds)
        from BoneMetSegLogic import RunOptions, table_of

        parameterNode = BoneMetSeg.getParameterNode()
        tableNode = table_of(segmentationNode)
        self.statusLabel.text = "Segmenting around the click..."
        segmentId = None
        self.scriptedEffect.saveStateForUndo()
        with slicer.util.tryWithErrorDisplay("BoneMetSeg could not add a lesion here.", waitCursor=True):
            options = RunOptions.from_parameter_node(parameterNode)
            segmentId = self.logic().add_lesion_at_point(volumeNode, segmentationNode, tableNode, pointRas, options)
        if segmentId:
            segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
            self.statusLabel.text = f"Added {segment.GetName() if segment else segmentId}."
            self.scriptedEffect.parameterSetNode().SetSelectedSegmentID(segmentId)
        else:
            self.statusLabel.text = "No lesion found at this point; try the centre of the lesion."
        logging.info(f"BoneMetSeg click-to-add at RAS {tuple(round(c, 1) for c in pointRas)}: {segmentId}")
        return segmentId
