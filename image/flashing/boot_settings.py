"""Keeping the vendor's settings on the boot partition: copied off the card
before it is overwritten, and put on the new boot partition (staged in
the work folder) in place of the image's sample settings."""
from __future__ import annotations

from pathlib import Path

from .target import Target
from .tools import MTOOLS_ENV, run

SETTINGS = "kiosk-settings.toml"
APPLIED = "kiosk-settings.applied.toml"


def fat_names(image: str) -> list[str]:
    """Names in the top folder of the FAT filesystem IMAGE (mtools' -i syntax)."""
    out = run(["mdir", "-b", "-i", image, "::/"], "reading the boot partition", error=OSError, env=MTOOLS_ENV)
    return [line.removeprefix("::/").rstrip("/") for line in out.splitlines() if line.startswith("::/")]


def vendor_files(names: list[str]) -> list[str]:
    """The vendor's own files on a boot partition: the settings (applied or
    not) and Wi-Fi not yet applied."""
    return [n for n in names if n in (SETTINGS, APPLIED) or n.endswith(".nmconnection")]


def save_card_settings(target: Target, into: Path) -> tuple[list[Path], str | None]:
    """Copy the vendor's settings off the card's boot partition before it is
    overwritten.  Returns (files, warning)."""
    boot = target.partitions[0]
    image = f"{target.path}@@{boot.start}"
    try:
        names = vendor_files(fat_names(image))
        into.mkdir(mode=0o700)
        for name in names:
            run(["mcopy", "-n", "-i", image, f"::/{name}", str(into / name)],
                "copying the settings off the card", error=OSError, env=MTOOLS_ENV)
    except OSError as exc:
        return [], f"the card's boot partition could not be read ({exc}); its settings file is not carried over"
    return [into / name for name in names], None


def fix_boot_settings(staged: Path, carried: list[Path]) -> None:
    """The new boot partition gets the card's settings, never the image's
    sample: the kiosk applies a kiosk-settings.toml it finds on start, and the
    sample would replace the vendor's settings."""
    names = fat_names(str(staged))
    for name in vendor_files(names):
        run(["mdel", "-i", str(staged), f"::/{name}"], "removing the sample settings", error=OSError, env=MTOOLS_ENV)
    for path in carried:
        run(["mcopy", "-o", "-i", str(staged), str(path), f"::/{path.name}"],
            "copying the settings onto the new boot partition", error=OSError, env=MTOOLS_ENV)
    if sorted(vendor_files(fat_names(str(staged)))) != sorted(p.name for p in carried):
        raise OSError("the settings on the new boot partition are not what was carried over")
