"""The AOTKERNELS_* environment variables and device specs (``cuda:1``), read strictly."""
from __future__ import annotations

import os
import re
from typing import Tuple

from .errors import SettingError

REQUIRE_AOT_ENV = "AOTKERNELS_REQUIRE_AOT"
DEVICE_ENV = "AOTKERNELS_DEVICE"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def require_aot() -> bool:
    """AOTKERNELS_REQUIRE_AOT as a switch; a value it does not know is an error, never "off".

    Failing closed matters here: the variable exists to prove that AOT code ran, so a typo
    such as ``2`` or ``y`` must not quietly allow JIT.
    """
    raw = os.environ.get(REQUIRE_AOT_ENV)
    value = (raw or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError(f"aotkernels: {REQUIRE_AOT_ENV}={raw[:40]!r} is not a switch value; use 1/true/yes/on to "
                       f"refuse JIT, or 0/false/no/off or leave it unset to allow it")


_DEVICE_SPEC = re.compile(r"^(cuda|opencl)(?::([0-9]{1,6}))?$")


def parse_device_spec(text: str, what: str) -> Tuple[str, int]:
    """``cuda``, ``cuda:1``, ``opencl:0`` -> (backend, index); ``what`` names the source in the error."""
    m = _DEVICE_SPEC.match(text.strip().lower())
    if m is None:
        raise SettingError(f"aotkernels: {what}={text[:40]!r} is not a device; write cuda, cuda:N, opencl or "
                           "opencl:N (python -m aotkernels lists the devices and their numbers)")
    return m.group(1), int(m.group(2) or 0)
