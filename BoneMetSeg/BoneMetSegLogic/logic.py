"""BoneMetSegLogic: everything the module does to the MRML scene, without Qt.

Inference always runs in a ``bonemetseg`` child process (``cli_process``): the long whole-CT
run asynchronously (``start`` / ``poll`` / ``cancel``), re-scoring and click-to-add
synchronously (seconds). Torch is never imported into Slicer's process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from BoneMetSegLib.vocabulary import (
    ALGORITHM_AUTOMATIC,
    ALGORITHM_SEMIAUTOMATIC,
    TAG_ALGORITHM_NAME,
    TAG_ALGORITHM_TYPE,
    TAG_EDITED,
    TAG_ORIGIN,
    TAG_PREDICTED_ORIGIN,
    segment_id,
    segment_name,
)

from . import segments as seg_utils
from . import dicom_export
from .cli_process import SegmentationRun, run_cli
from .export import ExportError, write_and_validate
from .table import fill_table, patient_summary, table_of
from .types import (
    ATTR_MODEL,
    ATTR_ORIGIN_THRESHOLD,
    ATTR_SEGMENT_IDS,
    REF_TABLE,
    REF_VOLUME,
    BoneMetSegRunError,
    EditedSegmentationError,
    RunOptions,
)
from .volume_io import ijk_to_ras, image_from_array, ras_to_lps, volume_to_image, write_volume

BINARY_LABELMAP = "Binary labelmap"


class BoneMetSegLogic:
    def __init__(self, scene=None):
        if scene is None:
            import slicer

            scene = slicer.mrmlScene
        self.scene = scene

    # ------------------------------------------------------------------ whole-CT run
    def start(self, volume_node, options: RunOptions | None = None) -> SegmentationRun:
        """Write the volume to a temporary .nrrd and start ``bonemetseg predict`` on it."""
        options = options or RunOptions()
        _check_volume(volume_node)
        workdir = SegmentationRun.new_workdir()
        try:
            input_path = workdir / "input.nrrd"
            write_volume(volume_node, input_path)
            args = options.cli_args()
            if options.detection_threshold is not None:
                args += ["--threshold", repr(float(options.detection_threshold))]
            run = SegmentationRun.start(volume_node.GetID(), input_path, workdir, args,
                                        input_label=f"volume '{volume_node.GetName()}'")
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        run.origin_threshold = float(options.origin_threshold)
        return run

    def load_results(self, run: SegmentationRun, segmentation_node=None, overwrite_edited: bool = False):
        """One segment per lesion of a finished run, and its table: ``(segmentation_node, table_node)``.

        ``segmentation_node`` None: a new node. An existing node is replaced, unless it holds edits
        and ``overwrite_edited`` is False: then :class:`EditedSegmentationError` (ask the user, or
        pass None to get a new node).
        """
        status = run.poll()
        if status.state != "done":
            raise BoneMetSegRunError(f"No results to load: the run is {status.state} ({status.message}).")
        if segmentation_node is not None and not overwrite_edited and self.is_edited(segmentation_node):
            raise EditedSegmentationError(
                f"'{segmentation_node.GetName()}' holds edited lesions; choose another output segmentation "
                "or confirm that the edits may be replaced."
            )
        volume = self.scene.GetNodeByID(run.volume_node_id) if run.volume_node_id else None
        if volume is None:
            raise BoneMetSegRunError("The CT volume of this run is no longer in the scene.")
        report = json.loads(Path(run.report_path).read_text(encoding="utf-8"))
        seg = segmentation_node or self._new_segmentation(volume)
        self._attach(seg, volume)
        seg.GetSegmentation().RemoveAllSegments()
        seg.SetAttribute(ATTR_ORIGIN_THRESHOLD, repr(getattr(run, "origin_threshold", 0.5)))
        model = report.get("model", {})
        seg.SetAttribute(ATTR_MODEL, f"{model.get('name', '')} {model.get('version', '')}".strip())
        seg.SetAttribute(dicom_export.ATTR_MODEL_INFO, json.dumps(model))  # name, version, sha256 for the SR
        algorithm = f"BoneMetSeg {report.get('bonemetseg_version', '')}".strip()
        lesions = report.get("lesions", [])
        if lesions:
            wanted = {les["segment_id"]: (les["segment_id"], segment_name(les["id"])) for les in lesions}
            self._copy_segments(run.seg_path, seg, wanted)
        for les in lesions:
            segment = seg.GetSegmentation().GetSegment(les["segment_id"])
            seg_utils.set_scores(segment, les, algorithm, edited=False, algorithm_type=ALGORITHM_AUTOMATIC)
            seg_utils.mark_scored(seg, les["segment_id"])
        seg.SetAttribute(ATTR_SEGMENT_IDS, ",".join(les["segment_id"] for les in lesions))
        table = self._table_for(seg)
        fill_table(table, seg)
        self._place_in_hierarchy(volume, seg, table)
        return seg, table

    # ------------------------------------------------------------------ edits
    def is_edited(self, segmentation_node) -> bool:
        """True when the user changed the lesions since they were loaded: a mask differs from its
        fingerprint, a segment was added, deleted, re-scored or added by a click."""
        ids = seg_utils.segment_ids(segmentation_node)
        scored = [s for s in (segmentation_node.GetAttribute(ATTR_SEGMENT_IDS) or "").split(",") if s]
        if any(sid not in ids for sid in scored):
            return True
        segmentation = segmentation_node.GetSegmentation()
        for sid in ids:
            if seg_utils.get_tag(segmentation.GetSegment(sid), TAG_EDITED) == "true":
                return True
            if seg_utils.mask_changed(segmentation_node, sid):
                return True
        return False

    def rescore_edited(self, volume_node, segmentation_node, table_node, options: RunOptions | None = None) -> list:
        """Re-score every segment whose mask changed since it was scored (``bonemetseg rescore``);
        update its tags (Edited "true"), the table and the patient summary. Returns their ids.
        Emptied segments are left as they are."""
        options = options or RunOptions()
        _check_volume(volume_node)
        changed = [sid for sid in seg_utils.segment_ids(segmentation_node)
                   if seg_utils.mask_changed(segmentation_node, sid)]
        labels = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint16)
        value_of = {}
        for sid in changed:
            mask = self.mask_on_volume(segmentation_node, sid, volume_node)
            if mask.any():
                value_of[sid] = len(value_of) + 1
                labels[mask] = value_of[sid]
        present = set(np.unique(labels).tolist())
        value_of = {sid: v for sid, v in value_of.items() if v in present}  # fully covered by a later one
        if not value_of:
            return []
        workdir = SegmentationRun.new_workdir()
        try:
            write_volume(volume_node, workdir / "input.nrrd")
            image = image_from_array(labels, ijk_to_ras(volume_node))
            import SimpleITK as sitk

            sitk.WriteImage(image, str(workdir / "labels.nii.gz"), useCompression=True)
            run_cli(["rescore", workdir / "input.nrrd", "--labels", workdir / "labels.nii.gz",
                     "--report", workdir / "rescore.json", *options.cli_args()],
                    rename=_names(workdir, volume_node))
            report = json.loads((workdir / "rescore.json").read_text(encoding="utf-8"))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._attach(segmentation_node, volume_node)
        segmentation_node.SetAttribute(ATTR_ORIGIN_THRESHOLD, repr(float(options.origin_threshold)))
        by_value = {int(les["label_value"]): les for les in report["lesions"]}
        algorithm = f"BoneMetSeg {report.get('bonemetseg_version', '')}".strip()
        segmentation = segmentation_node.GetSegmentation()
        for sid, value in value_of.items():
            seg_utils.set_scores(segmentation.GetSegment(sid), by_value[value], algorithm, edited=True,
                                 algorithm_type=ALGORITHM_SEMIAUTOMATIC)
            seg_utils.mark_scored(segmentation_node, sid)
        fill_table(table_node or self._table_for(segmentation_node), segmentation_node)
        return list(value_of)

    def add_lesion_at_point(self, volume_node, segmentation_node, table_node, point_ras,
                            options: RunOptions | None = None):
        """Segment the lesion at a RAS point (``bonemetseg predict --point``) and add it as
        "Lesion N+1"; its id, or None when the model finds no lesion there."""
        options = options or RunOptions()
        _check_volume(volume_node)
        x, y, z = ras_to_lps(point_ras)
        workdir = SegmentationRun.new_workdir()
        try:
            write_volume(volume_node, workdir / "input.nrrd")
            seg_path, report_path = workdir / "point.seg.nrrd", workdir / "point.json"
            run_cli(["predict", workdir / "input.nrrd", "-o", seg_path, "--report", report_path,
                     f"--point={x!r},{y!r},{z!r}", "--progress", "none", *options.cli_args()],
                    rename=_names(workdir, volume_node))
            report = json.loads(report_path.read_text(encoding="utf-8"))
            if not report["lesions"]:
                return None
            self._attach(segmentation_node, volume_node)
            number = seg_utils.next_lesion_number(segmentation_node)
            segmentation = segmentation_node.GetSegmentation()
            sid = segment_id(number)
            if segmentation.GetSegment(sid) is not None:
                sid = segmentation.GenerateUniqueSegmentID(sid)
            les = report["lesions"][0]
            self._copy_segments(seg_path, segmentation_node, {les["segment_id"]: (sid, segment_name(number))})
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if segmentation_node.GetAttribute(ATTR_ORIGIN_THRESHOLD) is None:
            segmentation_node.SetAttribute(ATTR_ORIGIN_THRESHOLD, repr(float(options.origin_threshold)))
        algorithm = f"BoneMetSeg {report.get('bonemetseg_version', '')}".strip()
        seg_utils.set_scores(segmentation.GetSegment(sid), les, algorithm, edited=True, algorithm_type=ALGORITHM_SEMIAUTOMATIC)
        seg_utils.mark_scored(segmentation_node, sid)
        table = table_node or self._table_for(segmentation_node)
        fill_table(table, segmentation_node)
        self._place_in_hierarchy(volume_node, segmentation_node, table)
        return sid

    # ------------------------------------------------------------------ queries
    def patient_summary(self, segmentation_node) -> dict:
        return patient_summary(segmentation_node)

    def lesion_center_ras(self, segmentation_node, segment_id: str) -> tuple:
        return seg_utils.centroid_ras(segmentation_node, segment_id)

    def mask_on_volume(self, segmentation_node, segment_id: str, volume_node) -> np.ndarray:
        """The segment as a (k, j, i) bool array on the volume's voxel grid."""
        import slicer
        import vtk
        from vtk.util import numpy_support

        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "BoneMetSeg-temp")
        try:
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                    segmentation_node, ids, labelmap, volume_node):
                raise ValueError(f"Segment {segment_id} cannot be exported on the volume's grid.")
            image = labelmap.GetImageData()
            dims = image.GetDimensions()
            array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]) != 0
        finally:
            self._remove_node(labelmap)
        return array

    # ------------------------------------------------------------------ export
    def export_training_case(self, volume_node, segmentation_node, dataset_dir, case_id: str,
                             patient_id: str | None = None) -> Path:
        """Write ``<dataset_dir>/<case_id>/`` (image, labels, lesions.json; format A) and validate it.

        One label per non-empty segment, in segment order; origin = the segment's
        ``BoneMetSeg.Origin`` tag (the annotator's) else ``BoneMetSeg.PredictedOrigin``.
        """
        _check_volume(volume_node)
        segmentation = segmentation_node.GetSegmentation()
        labels = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), np.uint16)
        origins = {}
        for sid in seg_utils.segment_ids(segmentation_node):
            segment = segmentation.GetSegment(sid)
            origin = seg_utils.get_tag(segment, TAG_ORIGIN) or seg_utils.get_tag(segment, TAG_PREDICTED_ORIGIN)
            if origin is None:
                raise ExportError(f"Segment '{segment.GetName()}' has no origin: set its tag {TAG_ORIGIN} to "
                                  "'lung' or 'other' (or re-score it).")
            mask = self.mask_on_volume(segmentation_node, sid, volume_node)
            if mask.any():
                value = len(origins) + 1
                labels[mask] = value
                origins[value] = origin
        present = sorted(set(np.unique(labels).tolist()) - {0})
        if not present:
            raise ExportError(f"'{segmentation_node.GetName()}' has no lesion voxels; nothing to export.")
        lut = np.zeros(max(origins) + 1, np.uint16)
        lut[present] = np.arange(1, len(present) + 1)  # consecutive even if a segment was overdrawn
        origins = {int(lut[v]): origins[v] for v in present}
        return write_and_validate(dataset_dir, case_id, volume_to_image(volume_node), lut[labels], origins,
                                  patient_id=patient_id)

    def export_dicom(self, volume_node, segmentation_node, output_dir=None, source_files=None,
                     add_to_database: bool = True) -> dict:
        """Write the DICOM SEG and TID 1500 SR of the current (edited, re-scored) lesions of a CT loaded
        from Slicer's DICOM database, and add them to that database (then send them to the PACS with
        the DICOM module). ``output_dir`` None: a temporary folder (removed once the database holds
        copies). ``source_files`` None: the series' files from the database. Returns the paths written
        (no SEG without lesions). Raises ``dicom_export.DicomExportError`` with the reason."""
        import tempfile

        _check_volume(volume_node)
        dicom_export.instance_uids(volume_node)  # loaded from DICOM, else a clear error
        if source_files is None:
            source_files = dicom_export.source_files_from_database(volume_node)
        temporary = output_dir is None
        folder = Path(tempfile.mkdtemp(prefix="BoneMetSeg-dicom-")) if temporary else Path(output_dir)
        try:
            paths = dicom_export.export_dicom(self, volume_node, segmentation_node, folder, source_files)
            if add_to_database:
                dicom_export.add_to_database(paths.values())
        finally:
            if temporary:
                shutil.rmtree(folder, ignore_errors=True)
        return paths

    # ------------------------------------------------------------------ helpers
    def _new_segmentation(self, volume):
        seg = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{volume.GetName()} BoneMetSeg")
        seg.CreateDefaultDisplayNodes()
        return seg

    def _attach(self, seg, volume) -> None:
        """Reference geometry, transform and CT reference of ``seg`` follow ``volume``."""
        seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        seg.SetNodeReferenceID(REF_VOLUME, volume.GetID())
        seg.SetAndObserveTransformNodeID(volume.GetTransformNodeID())
        if seg.GetDisplayNode() is None:
            seg.CreateDefaultDisplayNodes()

    def _table_for(self, seg):
        table = table_of(seg)
        if table is None:
            table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", f"{seg.GetName()} lesions")
            seg.SetNodeReferenceID(REF_TABLE, table.GetID())
        return table

    def _copy_segments(self, seg_path, target, wanted: dict) -> None:
        """Copy segments of a CLI ``.seg.nrrd`` into ``target``: ``{source id: (new id, name)}``.

        Each lesion becomes its own binary labelmap (only its voxels), on the file's lattice, with
        the file's terminology and algorithm tags.
        """
        import slicer

        temp = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "BoneMetSeg-temp")
        storage = slicer.vtkMRMLSegmentationStorageNode()
        self.scene.AddNode(storage)
        try:
            storage.SetFileName(str(seg_path))
            if not storage.ReadData(temp):
                raise BoneMetSegRunError(f"Cannot read the result file {seg_path}.")
            tags = [slicer.vtkSegment.GetTerminologyEntryTagName(), TAG_ALGORITHM_TYPE, TAG_ALGORITHM_NAME]
            for source_id, (new_id, name) in wanted.items():
                source = temp.GetSegmentation().GetSegment(source_id)
                if source is None:
                    raise BoneMetSegRunError(f"The result file {seg_path} has no segment {source_id}.")
                mask, start, world = seg_utils.internal_mask(temp, source_id)
                segment = seg_utils.segment_from_mask(mask, start, world, name)
                seg_utils.copy_tags(source, segment, tags)
                target.GetSegmentation().AddSegment(segment, new_id)
        finally:
            self._remove_node(temp)
            self.scene.RemoveNode(storage)

    def _remove_node(self, node) -> None:
        for i in range(node.GetNumberOfDisplayNodes()):
            display = node.GetNthDisplayNode(i)
            if display is not None:
                self.scene.RemoveNode(display)
        self.scene.RemoveNode(node)

    def _place_in_hierarchy(self, volume, *nodes) -> None:
        """Put ``nodes`` beside the volume in the subject hierarchy (under its study)."""
        sh = self.scene.GetSubjectHierarchyNode()
        volume_item = sh.GetItemByDataNode(volume) or sh.CreateItem(sh.GetSceneItemID(), volume)
        parent = sh.GetItemParent(volume_item)
        for node in nodes:
            item = sh.GetItemByDataNode(node) or sh.CreateItem(parent, node)
            sh.SetItemParent(item, parent)


def _names(workdir: Path, volume) -> dict:
    """How CLI messages should name the temporary input and labels."""
    return {workdir / "input.nrrd": f"volume '{volume.GetName()}'", workdir / "labels.nii.gz": "the lesion labelmap"}


def _check_volume(node) -> None:
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError("Select a CT volume (a scalar volume, not a labelmap or segmentation).")
    if node.GetImageData() is None:
        raise ValueError(f"Volume '{node.GetName()}' has no image data; load a CT first.")
