"""Training case format A: reader, writer and validator (see ``format`` for the folder layout)."""

from .format import Case, DatasetError, geometry_mismatch
from .reader import inspect_case, list_cases, load_case
from .validator import validate_dataset
from .writer import write_case

__all__ = ["Case", "DatasetError", "geometry_mismatch", "inspect_case", "list_cases", "load_case",
           "validate_dataset", "write_case"]
