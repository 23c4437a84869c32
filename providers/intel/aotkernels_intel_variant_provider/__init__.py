"""Wheel-variant provider plugin for Intel GPUs (namespace ``intel``, feature ``device_ip``)."""
__version__ = "0.1.0"
