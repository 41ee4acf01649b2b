"""Built-in plugin: the kiosk's own battery, read from Linux's power_supply
class (``/sys/class/power_supply``: a laptop's ``BAT0``, the driver of a UPS
HAT on a Raspberry Pi), as the kernel documents it in
``Documentation/ABI/testing/sysfs-class-power``.

On battery and running low it warns the vendor once (screen and status light);
nearly empty it stops new sales, lets the sale under way finish and switches
the kiosk off cleanly (``[power] shutdown_command``); back on mains power it
says so and sales go on.  ``kiosk status`` shows the battery.  ``docs/power.md``
has the settings and the hardware.

What it must never do:

- make a sound where there is no battery (a desktop, CI): no battery, no notice;
- cut a sale in half: it stops new sales first and waits for the one under way;
- switch off a kiosk that is charging, or whose charging it cannot tell;
- wake the CPU often: one read every ``poll_seconds`` on its own daemon thread.

It uses only what ``import kiosk`` offers (``pause_sales``,
``wait_for_sales``, ``notify``, the ``kiosk_status`` hook): a third-party
plugin could do all of it.
"""
from __future__ import annotations

import logging
import shlex
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from kiosk import Notice, Setting, hookimpl
from kiosk import notices

NAME = SECTION = "power"
SYSFS = Path("/sys/class/power_supply")
BATTERY_TYPES = ("Battery", "UPS")
MAINS_TYPES = ("Mains", "USB", "Wireless")
NOT_DISCHARGING = ("Charging", "Full", "Not charging")
COMMAND_SECONDS = 60.0       # `systemctl poweroff` answers at once; a command that hangs is a failure

log = logging.getLogger("kiosk.power")


def _existing_folder(value: str) -> str | None:
    if value and not Path(value).is_dir():
        what = "is not a folder" if Path(value).exists() else "does not exist"
        return f"{value} {what} (a power_supply folder such as /sys/class/power_supply/BAT0)"
    return None


def _percent(value: int) -> str | None:
    return None if 0 <= value <= 100 else f"must be a percentage from 0 to 100, not {value}"


def _at_least_a_second(value: float) -> str | None:
    return None if value >= 1 else f"must be at least 1 second, not {value:g}"


def _command(value: str) -> str | None:
    try:
        shlex.split(value)
    except ValueError as exc:
        return f"is not a command line ({exc})"
    return None


SETTINGS = {
    SECTION: {
        "path": Setting(str, "", "The power_supply folder to read: the class folder or one supply in it "
                        "(/sys/class/power_supply/BAT0). Empty: /sys/class/power_supply, and quiet when "
                        "it holds no battery", path=True, check=_existing_folder),
        "low_percent": Setting(int, 20, "On battery at or below this percent (or the driver says Low): "
                               "warn the vendor once", check=_percent),
        "critical_percent": Setting(int, 5, "On battery at or below this percent (or the driver says "
                                    "Critical): stop new sales, then shut down", check=_percent),
        "poll_seconds": Setting(float, 60.0, "How often the battery is read", check=_at_least_a_second),
        "finish_seconds": Setting(float, 120.0, "How long a sale under way may take to finish before the "
                                  "kiosk shuts down (a reader waits up to [reader] timeout_seconds)"),
        "shutdown_command": Setting(str, "", "Run once critical and no sale is under way (the SD image: "
                                    "systemctl poweroff). Empty: sales stop, the kiosk stays on",
                                    check=_command),
    },
}


# -- reading the power_supply class ---------------------------------------------------

@dataclass(frozen=True)
class Battery:
    """One reading of the battery, as its driver reports it."""
    name: str                    # the supply's folder: BAT0, a UPS HAT's driver name
    percent: int | None          # capacity
    level: str | None            # capacity_level: Critical, Low, Normal, High, Full, Unknown
    status: str | None           # Charging, Discharging, Not charging, Full, Unknown
    mains: bool | None           # a Mains/USB supply is online (None: the kernel shows none)
    volts: float | None          # voltage_now

    @property
    def on_battery(self) -> bool:
        """Known to be running down.  Unknown is not "on battery": a kiosk on
        mains with a worn battery must not switch itself off at every start."""
        if self.status == "Discharging":
            return True
        if self.status in NOT_DISCHARGING:
            return False
        return self.mains is False

    @property
    def charging(self) -> bool:
        return self.status == "Charging"

    def state(self, low: int, critical: int) -> str:
        """``critical``, ``low``, ``ok``, or ``unknown`` (no capacity at all)."""
        if self.level == "Critical" or (self.percent is not None and self.percent <= critical):
            return "critical"
        if self.level == "Low" or (self.percent is not None and self.percent <= max(low, critical)):
            return "low"
        if self.percent is None and self.level in (None, "Unknown"):
            return "unknown"
        return "ok"

    def left(self) -> str:
        return f"{self.percent}%" if self.percent is not None else f"capacity {self.level or 'unknown'}"


def _attr(supply: Path, name: str) -> str | None:
    try:
        return (supply / name).read_text().strip() or None
    except (OSError, UnicodeDecodeError):     # a driver may answer EIO/ENODATA for a property it cannot read now
        return None


def _number(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _supplies(folder: Path) -> list[Path]:
    try:
        return sorted(entry for entry in folder.iterdir() if entry.is_dir())
    except OSError:
        return []


def read_battery(folder: Path) -> Battery | None:
    """The battery under ``folder`` (the class folder, or one supply in it),
    or ``None`` when there is none.  A battery of a device (``scope`` Device:
    a Bluetooth reader's, a mouse's) is not the kiosk's."""
    one = (folder / "type").is_file()
    candidates = [folder] if one else _supplies(folder)
    battery = next((supply for supply in candidates
                    if _attr(supply, "type") in BATTERY_TYPES and _attr(supply, "scope") != "Device"
                    and _attr(supply, "present") != "0"), None)
    if battery is None:
        return None
    online = [_attr(supply, "online") for supply in _supplies(folder.parent if one else folder)
              if _attr(supply, "type") in MAINS_TYPES]
    online = [value for value in online if value is not None]
    percent = _number(_attr(battery, "capacity"))
    microvolts = _number(_attr(battery, "voltage_now"))
    return Battery(name=battery.name,
                   percent=None if percent is None else max(0, min(100, percent)),
                   level=_attr(battery, "capacity_level"), status=_attr(battery, "status"),
                   mains=any(value != "0" for value in online) if online else None,
                   volts=None if microvolts is None else round(microvolts / 1e6, 2))


# -- the plugin -----------------------------------------------------------------------

class PowerPlugin:
    """Reads the battery every ``poll_seconds`` and acts on each crossing once."""

    def __init__(self):
        self._lock = threading.Lock()        # one reading judged at a time
        self._kiosk = None
        self._settings: dict = {}
        self._folder = SYSFS
        self._battery: Battery | None = None
        self._told: str | None = None        # the warning the vendor has: None, "low" or "critical"
        self._paused = False                 # this plugin paused sales
        self._shutting_down = False          # the shutdown sequence is under way (or done)
        self._command_failed = False         # told once that the shutdown command failed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what tests and screens may read ------------------------------------------

    @property
    def battery(self) -> Battery | None:
        """The last reading (``None``: no battery)."""
        return self._battery

    # -- hooks -----------------------------------------------------------------------

    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl(trylast=True)     # after every notifier's start-up: the first warning must reach them
    def kiosk_startup(self, kiosk):
        self._close()                        # a kiosk opened before in this process and never shut down
        settings = dict(kiosk.config[SECTION])
        with self._lock:
            self._kiosk, self._settings = kiosk, settings
            self._folder = Path(settings["path"]) if settings["path"] else SYSFS
            self._told, self._paused, self._shutting_down, self._command_failed = None, False, False, False
            # the first reading warns and stops sales at once (a `kiosk charge` too); switching
            # off waits for the first poll, by the kiosk that stays up
            self._judge(kiosk, read_battery(self._folder))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop, settings["poll_seconds"]),
                                        name="power", daemon=True)
        self._thread.start()

    @hookimpl
    def kiosk_shutdown(self, kiosk):
        if kiosk is self._kiosk:
            self._close()

    @hookimpl
    def kiosk_status(self, kiosk):
        if kiosk is not self._kiosk:
            return None
        battery = self._battery
        if battery is None:
            return {"power": None}
        state = battery.state(self._settings["low_percent"], self._settings["critical_percent"])
        how = "charging" if battery.charging else "on battery" if battery.on_battery else (
            (battery.status or "on mains").lower())
        return {"power": {"supply": battery.name, "percent": battery.percent, "charging": battery.charging,
                          "on_battery": battery.on_battery, "status": battery.status, "level": battery.level,
                          "volts": battery.volts, "state": state,
                          "line": f"battery {battery.left()}, {how} ({state})"}}

    # -- polling -----------------------------------------------------------------------

    def _run(self, stop: threading.Event, every: float) -> None:
        while not stop.wait(every):
            try:
                self.poll()
            except Exception:      # a driver gone odd must not end the polling
                log.exception("power: reading the battery failed; trying again in %.0f s", every)

    def poll(self) -> None:
        """Read the battery now and act on it: what the plugin's thread does
        every ``poll_seconds`` (and what a test calls to be sure when)."""
        with self._lock:
            kiosk = self._kiosk
            if kiosk is None or self._shutting_down:
                return
            critical = self._judge(kiosk, read_battery(self._folder))
            if not (critical and self._settings["shutdown_command"]):
                return
            self._shutting_down = True
        self._shut_down(kiosk)

    def _judge(self, kiosk, battery: Battery | None) -> bool:
        """Tell each crossing once; pause or resume sales.  True: critical on battery."""
        self._battery = battery
        if battery is None:
            return False               # no battery (or it went away): nothing to say
        if not battery.on_battery:
            if self._told is not None:
                self._told = None
                if self._paused:
                    kiosk.resume_sales()
                    self._paused = False
                kiosk.notify(Notice(notices.POWER_RESTORED, "Back on mains power",
                                    f"battery {battery.left()} — sales go on", "success"))
            return False
        state = battery.state(self._settings["low_percent"], self._settings["critical_percent"])
        if state == "critical":
            if self._told != "critical":
                self._told = "critical"
                kiosk.pause_sales(f"battery nearly empty ({battery.left()}): plug the kiosk in to sell again")
                self._paused = True
                then = ("the kiosk switches off once the sale under way is finished"
                        if self._settings["shutdown_command"] else "plug the kiosk in to sell again")
                kiosk.notify(Notice(notices.BATTERY_CRITICAL, "Battery nearly empty",
                                    f"{battery.left()} left — new sales are refused; {then}", "error"))
            return True
        if state == "low" and self._told is None:
            self._told = "low"
            kiosk.notify(Notice(notices.BATTERY_LOW, "Battery low",
                                f"{battery.left()} left on battery — plug the kiosk in soon", "warning"))
        return False

    # -- switching off -----------------------------------------------------------------

    def _shut_down(self, kiosk) -> None:
        """Wait for the sale under way, look again, then run the shutdown command."""
        settings = self._settings
        if not kiosk.wait_for_sales(settings["finish_seconds"]):
            log.warning("power: a sale is still under way after %.0f s; shutting down anyway",
                        settings["finish_seconds"])
        with self._lock:
            battery = read_battery(self._folder)
            still_critical = self._judge(kiosk, battery)
            if not still_critical or self._stop.is_set():
                self._shutting_down = False      # plugged in while waiting, or the kiosk is closing
                return
        command = settings["shutdown_command"]
        log.warning("power: battery %s and no sale under way: running %r", battery.left(), command)
        problem = _run_command(command)
        if problem is None:
            return                      # the system is going down: systemd stops `kiosk run` next
        log.error("power: shutdown command %r failed: %s; new sales stay refused", command, problem)
        with self._lock:
            self._shutting_down = False      # tried again at the next poll
            tell, self._command_failed = not self._command_failed, True
        if tell:
            kiosk.notify(Notice(notices.BATTERY_CRITICAL, "Cannot switch off",
                                f"{command!r} failed ({problem}) — new sales stay refused; "
                                "plug the kiosk in or switch it off by hand", "error"))

    def _close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        with self._lock:
            self._kiosk = None


def _run_command(command: str) -> str | None:
    """Run ``command``; ``None`` when it succeeded, else one line saying why not."""
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=COMMAND_SECONDS,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"no answer in {COMMAND_SECONDS:.0f} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [""])[-1]
        return f"exit {done.returncode}" + (f": {said}" if said else "")
    return None


plugin = PowerPlugin()
