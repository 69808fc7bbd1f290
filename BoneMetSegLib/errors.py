"""Exceptions that carry a message meant for the user (no traceback needed)."""


class BoneMetSegError(Exception):
    """Base class: the message says what is wrong and what to do."""


class BoneMetSegInputError(BoneMetSegError):
    """The input image (or a path given by the user) cannot be processed."""


class BoneMetSegModelError(BoneMetSegError):
    """Model weights or model card are missing, corrupt or do not match."""


class BoneMetSegOutputError(BoneMetSegError):
    """An output file cannot be written (exists without --overwrite, bad folder...)."""


class BoneMetSegCancelled(BoneMetSegError):
    """Inference was cancelled by the caller."""
