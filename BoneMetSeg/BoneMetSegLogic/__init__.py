"""Qt-free logic of the BoneMetSeg Slicer module (interface C; see docs/slicer_module.md).

Importable as ``BoneMetSegLogic`` when the module folder is on ``sys.path`` (Slicer does that for
a scripted module). Works in Slicer and with the ``slicer-core`` wheel (pytest).
"""

import sys
from importlib.util import find_spec

from .cli_process import SegmentationRun, library_root

if find_spec("BoneMetSegLib") is None:  # development checkout: the library sits beside BoneMetSeg/
    sys.path.insert(0, str(library_root()))

from .dicom_export import DicomExportError  # noqa: E402
from .export import ExportError  # noqa: E402
from .logic import BoneMetSegLogic  # noqa: E402
from .table import table_of  # noqa: E402
from .types import (  # noqa: E402
    TABLE_COLUMNS,
    BoneMetSegRunError,
    EditedSegmentationError,
    RunOptions,
    RunStatus,
)

__all__ = [
    "BoneMetSegLogic", "RunOptions", "RunStatus", "SegmentationRun", "EditedSegmentationError",
    "BoneMetSegRunError", "ExportError", "DicomExportError", "TABLE_COLUMNS", "table_of",
]
