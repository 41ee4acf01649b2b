"""Safe mode, as OctoPrint's ``.incomplete_startup``: ``kiosk run`` writes a
flag file in the data directory when it starts and removes it once the kiosk
is up.  If the flag is still there at the next start, the last start did not
complete -- a plugin may have brought it down -- so only the built-in plugins
load, and the screen says so.

The flag's place is found from the raw ``config.toml`` (``[storage] path``),
before any plugin is imported: a plugin that crashes on import is the case
this is for.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

from .config import default_data_dir, resolve_path

FLAG_NAME = ".incomplete_startup"


def data_dir_of(config_path: Path) -> Path | None:
    """``[storage] path`` as the checked config would have it, or ``None``
    when the file cannot be read (the real error is reported later)."""
    try:
        with open(config_path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    path = raw.get("storage", {}).get("path", "") if isinstance(raw.get("storage"), dict) else ""
    if not isinstance(path, str):
        return None
    if not path:
        return default_data_dir()
    return resolve_path(Path(config_path).parent, path)


class Startup:
    def __init__(self, config_path: Path):
        folder = data_dir_of(config_path)
        self.flag = None if folder is None else folder / FLAG_NAME

    def last_failed(self) -> bool:
        """Did the last ``kiosk run`` stop before it was up?"""
        return self.flag is not None and self.flag.exists()

    def begin(self) -> None:
        if self.flag is None or not self.flag.parent.is_dir():
            return
        fd = os.open(self.flag, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"kiosk run started; removed once it is up\n")
            os.fsync(fd)            # survives the power cut that may follow
        finally:
            os.close(fd)

    def complete(self) -> None:
        if self.flag is not None:
            try:
                self.flag.unlink()
            except FileNotFoundError:
                pass
