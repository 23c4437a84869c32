"""Packaging: host extensions, wheel assembly, reuse of unchanged wheels, auditwheel repair."""
