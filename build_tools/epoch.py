"""SOURCE_DATE_EPOCH: the one timestamp every zip member and auditwheel's output carries.

Its own module because the wheel stages (package/assemble.py) and the repair step (repair.py, also a
subcommand) both read it, and neither should import the other.
"""
from __future__ import annotations

from collections.abc import Mapping

from build_tools.errors import ConfigError
from build_tools.package import wheels

# The last second a zip member's DOS date can say (2107-12-31 23:59:58; its seconds are even).
ZIP_EPOCH_MAX = 4354819198


def source_date_epoch(env: Mapping[str, str]) -> int | None:
    value = env.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(f"SOURCE_DATE_EPOCH: {value!r} is not a whole number of seconds since 1970")
    epoch = int(value)
    if epoch > ZIP_EPOCH_MAX:
        raise ConfigError(f"SOURCE_DATE_EPOCH: {value} is after 2107-12-31, the last date a zip file can hold; "
                          "use the commit's time (git log -1 --format=%ct)")
    return epoch


def env_with_epoch(env: Mapping[str, str]) -> dict[str, str]:
    """auditwheel stamps zip members with SOURCE_DATE_EPOCH when set; default it for reproducibility."""
    source_date_epoch(env)  # a bad value is an input error before any work, not a traceback in zipfile
    out = dict(env)
    out.setdefault("SOURCE_DATE_EPOCH", str(wheels.ZIP_EPOCH_MIN))
    return out
