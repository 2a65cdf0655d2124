"""Exceptions raised by backend selection and device checks."""


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot be used here; the message says why."""


class DeviceMismatchError(ValueError):
    """Arrays from different backends or devices met in one operation."""
