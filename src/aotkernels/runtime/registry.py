"""One Session per device, and the ``device=`` argument of the ops."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

from ..selection import Device
from .devices import default_device, discover, find_device
from .session import Session
from .settings import parse_device_spec

_sessions: Dict[Tuple[str, int], Session] = {}


def cuda_session(index: int) -> Session:
    """The session of CUDA device ``index`` (a user's array's device), discovering devices once."""
    s = _sessions.get(("cuda", index))
    if s is None:
        devices, notes = discover(cuda_only=True)
        s = session(find_device(f"cuda:{index}", "the array's device", devices, notes))
    return s


def session(device: Optional[Device] = None) -> Session:
    dev = device or default_device()
    key = (dev.backend, dev.index)
    if key not in _sessions:
        _sessions[key] = Session(dev)
    return _sessions[key]


DEVICE_ARG_HELP = ("None (the default device), an aotkernels.Session, an aotkernels.Device, "
                   "or a string such as 'cuda:0' or 'opencl:1'")


def check_device_arg(device: object, name: str = "device") -> None:
    """Refuse a ``device=`` value that is not one of the accepted kinds, touching no driver.

    ``device=0`` used to be falsy and so silently meant "the default device"; an int is refused
    rather than guessed at (CUDA's 0 and OpenCL's 0 are different devices).
    """
    if device is None or isinstance(device, (Session, Device)):
        return
    if isinstance(device, str):
        parse_device_spec(device, name)
        return
    raise TypeError(f"{name} must be {DEVICE_ARG_HELP}, not {type(device).__name__}")


def resolve_session(device: object, name: str = "device") -> Session:
    """The session for a ``device=`` argument (see check_device_arg)."""
    check_device_arg(device, name)
    if isinstance(device, Session):
        return device
    if isinstance(device, Device):
        return session(device)
    if isinstance(device, str):
        devices, notes = discover()
        return session(find_device(device, name, devices, notes))
    return session()
