"""What every benchmark writes with its results: the machine and its load, as JSON."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine(**extra) -> dict:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg": os.getloadavg(), **extra}


def write_results(path: str | Path, data: dict) -> None:
    """Write ``data`` (with the load at the end of the run added) as pretty JSON; say where."""
    data.setdefault("machine", machine())["load_avg_after"] = os.getloadavg()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {path}")
