"""Small file readers shared by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path) -> Any:
    """The JSON document in ``path``."""
    return json.loads(Path(path).read_text())
