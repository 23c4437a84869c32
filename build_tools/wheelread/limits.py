"""Limits on what one input wheel may cost.

Every one is checked from the file's size and the zip's central directory *before* any member is
inflated, so a crafted wheel costs neither unbounded memory nor time (a 3 MB wheel can hold a
3 GiB member of zeros). They are far above what a wheel of this project holds: the repo matrix's
fat wheel is 0.8 MB (2.4 MB inflated, 59 members, its largest member 0.4 MB, best compression
ratio 17:1), and matrix.yaml's size budgets are 100 MiB per wheel by default.

The checks read them as ``limits.NAME`` at call time, never as copies, so that a test can lower
one with monkeypatch and reach every check that uses it.
"""
from __future__ import annotations

MAX_WHEEL_BYTES = 512 << 20  # an input wheel file
MAX_MEMBERS = 10_000  # members of one wheel
MAX_CENTRAL_DIRECTORY = 4 << 20  # its central directory (zipfile parses it whole)
MAX_NAME_CHARS = 255  # one member name
MAX_MEMBER_BYTES = 256 << 20  # one member, inflated
MAX_WHEEL_INFLATED = 512 << 20  # all members of one wheel, inflated
MAX_INPUTS_INFLATED = 2 << 30  # all inputs together, inflated: about what the merge may hold in memory
MAX_TEXT_BYTES = 16 << 20  # RECORD, WHEEL, METADATA and the image manifest, which are parsed in memory
MAX_RATIO = 200  # inflated:compressed; deflate reaches ~1000:1 only on degenerate data such as zeros
RATIO_FLOOR = 1 << 20  # the ratio limit applies to members that inflate to at least this
CHUNK = 1 << 20  # members are inflated and hashed this much at a time
