"""The run-time errors and warnings of the package (re-exported by ``aotkernels`` and ``aotkernels.runtime``)."""
from __future__ import annotations


class AotKernelsError(RuntimeError):
    """Base class of the package's run-time errors."""


class NoDeviceError(AotKernelsError):
    pass


class ImageError(AotKernelsError):
    """An image file is missing, damaged, or rejected by the driver."""


class ManifestError(ImageError):
    """images/manifest.json is missing, unreadable, or not the document the package wrote."""


class SettingError(AotKernelsError, ValueError):
    """An AOTKERNELS_* environment variable has a value the package does not accept."""


class AotRequiredError(AotKernelsError):
    """AOTKERNELS_REQUIRE_AOT=1 and only a JIT form could serve the device."""


class JitFallbackWarning(UserWarning):
    """A kernel module is JIT-compiled from a portable form on this device."""
