"""Exceptions shared by every part of convbench."""


class ConvbenchError(Exception):
    """Base class of convbench's own errors."""


class UnsupportedError(NotImplementedError, ConvbenchError):
    """A backend was asked for an op, parameter or dtype it does not implement.

    The message says what is unsupported and by which backend.
    """


class BackendUnavailableError(ConvbenchError, RuntimeError):
    """A backend cannot run on this machine (optional package missing, no GPU)."""


class UnknownNameError(ConvbenchError, ValueError):
    """An unknown backend, suite, op or descriptor; the message lists the valid names."""


class VerificationError(ConvbenchError, AssertionError):
    """A result differs from the float64 reference by more than the tolerance."""


class BackendRegistrationError(ConvbenchError, ValueError):
    """A user backend cannot be registered: a name clash, a class with no name or no op, a
    backend file that fails to import. The message names the class and where it came from."""
