"""Silence ITK's console warnings while a file is read: the reader's own checks give the one-line
reason (ITK's lines, such as a DICOM series' "non uniform sampling", would come on top of it)."""

from __future__ import annotations

import contextlib

import SimpleITK as sitk


@contextlib.contextmanager
def quiet_itk():
    """Turn ITK's global warning display off for the block; restore it afterwards."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


__all__ = ["quiet_itk"]
