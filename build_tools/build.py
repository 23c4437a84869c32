#!/usr/bin/env python3
"""Entry point: ``python build_tools/build.py --matrix matrix.yaml`` (see build_tools/cli.py)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from build_tools.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
