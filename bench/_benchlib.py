"""Helpers shared by the scripts in bench/ (not a benchmark itself)."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"          # git-ignored; on the same disk as the project
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

# Never a real key: every request of these scripts goes to a FakeStripe on 127.0.0.1.
TEST_KEY = "sk_test_" + "b3nch" * 5
LIVE_KEY = "sk_live_" + "b3nch" * 5


def use_project_python() -> None:
    """`python bench/x` with a python that lacks the project: re-run under the venv's."""
    try:
        import kiosk  # noqa: F401
    except ImportError:
        if VENV_PYTHON.exists() and Path(sys.prefix).resolve() != VENV_PYTHON.parent.parent.resolve():
            os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
        raise
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def write_config(directory: Path, api_base: str = "http://127.0.0.1:9", **sections) -> Path:
    """A config.toml in ``directory``, as tests/conftest.py's write_config
    (``sections`` override tables; ``a__b`` names table [a.b])."""
    config = {
        "kiosk": {"id": "bench-kiosk", "currency": "usd", "offline_behavior": "force_offline"},
        "storage": {"path": "data"},
        "stripe": {"api_base": api_base, "max_network_retries": 2, "reachability_timeout": 1.0,
                   "request_timeout": 10.0, "lookup_margin_minutes": 1.0},
        "sync": {"retry_base_seconds": 0.0},
        "reader": {"use": "simulated"},
        "limits": {"per_transaction": 100.0, "total": 10_000_000.0, "max_pending": 2000},
    }
    import tomli_w   # the [test] extra, which the benches need anyway (psutil)
    for name, values in sections.items():
        target = config
        for part in name.split("__"):
            target = target.setdefault(part, {})
        target.update(values)
    path = Path(directory) / "config.toml"
    path.write_text(tomli_w.dumps(config))
    return path


def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(device, mount point, filesystem type) holding ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("?", "/", "?")
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) < 3:
                    continue
                device, mount, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[1]):
                    best = (device, mount, fstype)
    except OSError:
        pass
    return best
