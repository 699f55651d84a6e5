"""Exceptions puffer raises for bad input: each message names the problem and what would be valid."""


class PufferError(Exception):
    """Base class of every error puffer raises on purpose."""


class UnknownBackendError(PufferError, ValueError):
    """A backend name that puffer does not know."""


class BackendUnavailableError(PufferError, ImportError):
    """A known backend whose framework is not installed."""


class GradientError(PufferError, TypeError):
    """value_and_grad was asked for something that has no gradient."""


class SpaceError(PufferError, ValueError):
    """A value does not fit a space, or a space cannot be handled."""


class CheckpointError(PufferError, ValueError):
    """A checkpoint that is missing, corrupt, or from an unknown format version."""


class ExportError(PufferError, ValueError):
    """A policy or model that cannot be exported or loaded for deployment."""


class CompileError(PufferError, TypeError):
    """A compiled function did what `be.compile`'s contract forbids (e.g. branching on an array's value)."""
