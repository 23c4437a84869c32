"""Devices, image loading and launches: the only part of the package that talks to the native extensions.

Laid out like the builder's stage folders, one module per concern; this package re-exports
their public names, so ``from aotkernels.runtime import Session`` (and the rest) keeps working:

- ``errors``: the run-time errors and warnings;
- ``settings``: the AOTKERNELS_* environment variables and device specs, read strictly;
- ``images``: the images folder and reading one image, checked against the manifest's size and sha256
  before any driver sees it (regular files inside the folder only);
- ``manifest_file``: images/manifest.json, read once and validated as a whole;
- ``devices``: device discovery through the native extensions, and the default device;
- ``session``: ``Session``, one device's context, modules, buffers and launches;
- ``registry``: one Session per device, and the ``device=`` argument of the ops.
"""
from __future__ import annotations

from ..compat import DriverTooOldError, ModuleUnavailableError
from ..inflight import Inflight
from ..selection import AOT, JIT, NoImageError
from .devices import discover, default_device, find_device
from .errors import (AotKernelsError, AotRequiredError, ImageError, JitFallbackWarning, ManifestError, NoDeviceError,
                     SettingError)
from .images import IMAGES_DIR, image_path_problem, read_image
from .manifest_file import _MANIFEST_MAX_BYTES, Manifest, manifest
from .registry import DEVICE_ARG_HELP, check_device_arg, cuda_session, resolve_session, session
from .session import Loaded, Session
from .settings import DEVICE_ENV, REQUIRE_AOT_ENV, parse_device_spec, require_aot

__all__ = ["AOT", "JIT", "NoImageError", "Session", "session", "discover", "default_device", "manifest",
           "resolve_session", "check_device_arg", "AotKernelsError", "ImageError", "ManifestError", "SettingError",
           "AotRequiredError", "NoDeviceError", "JitFallbackWarning", "ModuleUnavailableError", "DriverTooOldError"]
# Imported for the code and tests that reach them as runtime.X (not part of __all__, as before).
_INTERNAL = (Inflight, IMAGES_DIR, image_path_problem, read_image, _MANIFEST_MAX_BYTES, Manifest, find_device,
             DEVICE_ARG_HELP, cuda_session, Loaded, DEVICE_ENV, REQUIRE_AOT_ENV, parse_device_spec, require_aot)
