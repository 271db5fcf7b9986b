from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS_PATH = REPO / ".cache" / "collections"
SAMPLE_APP = REPO / "tests" / "fixtures" / "app"
DEV_VENV = Path(sys.prefix)
