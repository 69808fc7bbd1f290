"""Evaluation metrics: voxel overlap (segmentation), lesion detection (matching, FROC) and
origin classification (AUC with a patient bootstrap). Definitions: docs/evaluation.md."""
