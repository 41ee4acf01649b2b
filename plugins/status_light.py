"""Notifier plugin: the kiosk's status light, buzzer and "sync now" button on a
Raspberry Pi's GPIO pins, through gpiozero.

The light says, at arm's length, whether something needs the vendor (a failed
payment to follow up, the 24-hour window closing), whether payments are being
sent, and whether Stripe is reachable; the buzzer beeps once for an approved
sale and twice for a declined one.  ``docs/status-light.md`` has the wiring,
the settings and the table of states.

What it must never do:

- raise into the kiosk or slow a sale: hooks take one lock, change a few
  fields and hand blinking and beeping to gpiozero's own background threads
  (which sleep between changes -- the kiosk runs on a battery);
- stop the kiosk when there is no GPIO (not a Raspberry Pi, no pin library,
  a pin already taken): it logs one warning naming the plugin and does
  nothing from then on;
- log card data: it reads a notice's kind, level and payment id, never its
  message.

It drives one kiosk per process (the one that named it in ``[notifier] use``).
"""
from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass

from kiosk import FAILED, Setting, hookimpl
from kiosk import notices

NAME = "status_light"
SECTION = "notifier.status_light"
SALE_DECLINED = "sale_declined"     # the engine's kind for a sale declined at the till (no constant in notices.py)

log = logging.getLogger("kiosk.status_light")

LED_PINS = {"green": "green_pin", "amber": "amber_pin", "red": "red_pin", "blue": "blue_pin"}
RGB_PINS = ("rgb_red_pin", "rgb_green_pin", "rgb_blue_pin")
RGB_COLOURS = {"green": (0.0, 1.0, 0.0), "amber": (1.0, 0.5, 0.0),
               "red": (1.0, 0.0, 0.0), "blue": (0.0, 0.0, 1.0)}
MAX_BEEP_SECONDS = 5.0
MIN_TONE_HZ, MAX_TONE_HZ = 200.0, 6000.0   # TonalBuzzer needs an octave either side in its note range

SETTINGS = {
    SECTION: {
        "rgb_red_pin": Setting(int, 0, "BCM pin of the RGB LED's red leg (0: no RGB LED)"),
        "rgb_green_pin": Setting(int, 0, "BCM pin of the RGB LED's green leg (0: no RGB LED)"),
        "rgb_blue_pin": Setting(int, 0, "BCM pin of the RGB LED's blue leg (0: no RGB LED)"),
        "green_pin": Setting(int, 0, "BCM pin of a separate green LED (0: not fitted)"),
        "amber_pin": Setting(int, 0, "BCM pin of a separate amber/yellow LED (0: not fitted)"),
        "red_pin": Setting(int, 0, "BCM pin of a separate red LED (0: not fitted)"),
        "blue_pin": Setting(int, 0, "BCM pin of a separate blue LED (0: not fitted)"),
        "active_high": Setting(bool, True, "false for a common-anode RGB LED, or LEDs wired from 3V3 to the pin"),
        "brightness": Setting(float, 1.0, "RGB LED brightness from 0 to 1 (PWM duty); separate LEDs are on/off"),
        "buzzer_pin": Setting(int, 0, "BCM pin of the buzzer (0: no buzzer)"),
        "buzzer_type": Setting(str, "active", "active: a buzzer that sounds on its own (gpiozero Buzzer); "
                               "tonal: a passive piezo driven at buzzer_tone_hz (TonalBuzzer)",
                               choices=("active", "tonal")),
        "buzzer_tone_hz": Setting(float, 2000.0, "Pitch of a tonal buzzer, in Hz"),
        "buzzer_active_high": Setting(bool, True, "false for an active buzzer module that sounds when its pin is low"),
        "approved_beep_seconds": Setting(float, 0.1, "Length of the approved beep (0: silent)"),
        "declined_beep_seconds": Setting(float, 0.3, "Length of each of the two declined beeps (0: silent)"),
        "button_pin": Setting(int, 0, "BCM pin of a \"sync now\" push button wired to ground (0: none)"),
        "pin_factory": Setting(str, "", "gpiozero pin factory: lgpio, rpigpio, pigpio, native or mock; "
                               "empty: gpiozero's default (GPIOZERO_PIN_FACTORY, else the first that works)"),
    },
}


@dataclass(frozen=True)
class Look:
    """How the light shows a state: a colour, steady or blinking."""
    colour: str
    on_seconds: float = 0.0      # 0: steady
    off_seconds: float = 0.0


# Highest priority first: the light shows the first state that holds.
LOOKS = {
    "battery_critical": Look("red", 0.1, 0.1),       # sales stopped, switching off: nothing else matters
    "store_alarm": Look("red", 0.25, 0.75),          # the store is damaged: sales go on, get it checked
    "attention": Look("red", 0.5, 0.5),
    "forwarding": Look("blue"),
    "battery_low": Look("amber", 0.1, 0.9),          # a short amber flash each second: plug in soon
    "reminder_urgent": Look("amber", 0.25, 0.25),
    "reminder": Look("amber", 1.0, 1.0),
    "offline": Look("amber"),
    "online": Look("green"),
}


# -- the devices ----------------------------------------------------------------

class RGBLight:
    def __init__(self, gpiozero, pins, active_high, brightness, factory):
        self.device = gpiozero.RGBLED(*pins, active_high=active_high, pwm=True, pin_factory=factory)
        self.brightness = brightness

    def can_show(self, colour: str) -> bool:
        return True

    def show(self, look: Look) -> None:
        colour = tuple(level * self.brightness for level in RGB_COLOURS[look.colour])
        if look.on_seconds:
            self.device.blink(look.on_seconds, look.off_seconds, on_color=colour, off_color=(0, 0, 0),
                              background=True)
        else:
            self.device.value = colour          # stops a blink first

    def off(self) -> None:
        self.device.off()


class SeparateLights:
    """Any subset of green, amber, red and blue LEDs, switched on and off (no
    PWM: steady LEDs then cost no CPU at all).  Amber falls back to red."""

    def __init__(self, gpiozero, pins: dict[str, int], active_high, factory, opened: list):
        self.leds = {}
        for colour, pin in pins.items():
            self.leds[colour] = gpiozero.LED(pin, active_high=active_high, pin_factory=factory)
            opened.append(self.leds[colour])

    def _led_for(self, colour: str) -> str | None:
        if colour in self.leds:
            return colour
        if colour == "amber" and "red" in self.leds:
            return "red"
        return None

    def can_show(self, colour: str) -> bool:
        return self._led_for(colour) is not None

    def show(self, look: Look) -> None:
        target = self._led_for(look.colour)
        for colour, led in self.leds.items():
            if colour != target:
                led.off()
        if target is None:
            return
        if look.on_seconds:
            self.leds[target].blink(look.on_seconds, look.off_seconds, background=True)
        else:
            self.leds[target].on()

    def off(self) -> None:
        for led in self.leds.values():
            led.off()


class ActiveBuzzer:
    """A buzzer that sounds by itself when its pin is driven: gpiozero's Buzzer."""

    def __init__(self, gpiozero, pin, active_high, factory):
        self.device = gpiozero.Buzzer(pin, active_high=active_high, pin_factory=factory)

    def beep(self, seconds: float, times: int) -> None:
        self.device.beep(seconds, seconds, n=times, background=True)

    def off(self) -> None:
        self.device.off()


class PiezoBuzzer:
    """A passive piezo: gpiozero's TonalBuzzer, a square wave at one pitch."""

    def __init__(self, gpiozero, pin, tone_hz, factory):
        from gpiozero.tones import Tone
        self.device = gpiozero.TonalBuzzer(pin, mid_tone=Tone(frequency=tone_hz), octaves=1,
                                           pin_factory=factory)

    def beep(self, seconds: float, times: int) -> None:
        # TonalBuzzer has no beep(): gpiozero's own source thread plays the
        # tone, then silence, each for source_delay, and ends
        self.device.source_delay = seconds
        self.device.source = [0, None] * times

    def off(self) -> None:
        self.device.source = None
        self.device.stop()


@dataclass
class Hardware:
    lights: RGBLight | SeparateLights | None
    buzzer: ActiveBuzzer | PiezoBuzzer | None
    button: object | None
    devices: list            # every gpiozero device opened, in order
    own_factory: object | None   # a pin factory this plugin made (closed with it)

    def close(self) -> None:
        """Everything off, then every device closed; never raises."""
        if self.button is not None:
            _quietly(setattr, self.button, "when_pressed", None)
        for part in (self.lights, self.buzzer):
            if part is not None:
                _quietly(part.off)
        for device in reversed(self.devices):
            _quietly(device.close)
        if self.own_factory is not None:
            _quietly(self.own_factory.close)


def _quietly(action, *args) -> None:
    try:
        action(*args)
    except Exception:      # closing half-broken hardware must not stop the shutdown
        log.debug("%s: closing a GPIO device failed", NAME, exc_info=True)


def settings_problem(settings: dict) -> str | None:
    """What is wrong with the plugin's settings, in one line, or ``None``."""
    rgb = [settings[key] for key in RGB_PINS]
    leds = {colour: settings[key] for colour, key in LED_PINS.items() if settings[key]}
    if any(rgb) and not all(rgb):
        return "set all three of rgb_red_pin, rgb_green_pin and rgb_blue_pin, or none"
    if all(rgb) and leds:
        return "set either the rgb_*_pin keys or the separate LED pins, not both"
    pins = {key: settings[key] for key in (*RGB_PINS, *LED_PINS.values(), "buzzer_pin", "button_pin")
            if settings[key]}
    if not pins:
        return "no pins are set"
    seen: dict[int, str] = {}
    for key, pin in pins.items():
        if pin in seen:
            return f"pin {pin} is set for both {seen[pin]} and {key}"
        seen[pin] = key
    if not 0 <= settings["brightness"] <= 1:
        return f"brightness must be from 0 to 1, not {settings['brightness']}"
    if settings["buzzer_type"] == "tonal" and not MIN_TONE_HZ <= settings["buzzer_tone_hz"] <= MAX_TONE_HZ:
        return f"buzzer_tone_hz must be from {MIN_TONE_HZ:g} to {MAX_TONE_HZ:g}, not {settings['buzzer_tone_hz']:g}"
    for key in ("approved_beep_seconds", "declined_beep_seconds"):
        if settings[key] > MAX_BEEP_SECONDS:
            return f"{key} must be at most {MAX_BEEP_SECONDS:g}, not {settings[key]}"
    return None


def _pin_factory(gpiozero, name: str):
    """(factory, whether this plugin owns it).  Empty: gpiozero's default."""
    name = name.strip().lower()
    if not name:
        gpiozero.Device.ensure_pin_factory()
        return gpiozero.Device.pin_factory, False
    if name == "mock":     # for trying the kiosk on a laptop; RGBLED needs PWM pins
        from gpiozero.pins.mock import MockFactory, MockPWMPin
        return MockFactory(pin_class=MockPWMPin), True
    from importlib.metadata import entry_points
    for entry in entry_points(group="gpiozero_pin_factories"):
        if entry.name == name:
            return entry.load()(), True
    raise gpiozero.BadPinFactory(f"no gpiozero pin factory named {name!r}")


def open_hardware(settings: dict, on_button) -> Hardware:
    """Open every configured device, or none: on failure, closes what it
    opened and raises."""
    opened: list = []
    factory = own_factory = None
    try:
        import gpiozero
        factory, owned = _pin_factory(gpiozero, settings["pin_factory"])
        own_factory = factory if owned else None
        lights = buzzer = button = None
        rgb = [settings[key] for key in RGB_PINS]
        if all(rgb):
            lights = RGBLight(gpiozero, rgb, settings["active_high"], settings["brightness"], factory)
            opened.append(lights.device)
        else:
            pins = {colour: settings[key] for colour, key in LED_PINS.items() if settings[key]}
            if pins:
                lights = SeparateLights(gpiozero, pins, settings["active_high"], factory, opened)
        if settings["buzzer_pin"]:
            if settings["buzzer_type"] == "tonal":
                buzzer = PiezoBuzzer(gpiozero, settings["buzzer_pin"], settings["buzzer_tone_hz"], factory)
            else:
                buzzer = ActiveBuzzer(gpiozero, settings["buzzer_pin"], settings["buzzer_active_high"], factory)
            opened.append(buzzer.device)
        if settings["button_pin"]:
            button = gpiozero.Button(settings["button_pin"], pull_up=True, bounce_time=0.05, pin_factory=factory)
            opened.append(button)
            button.when_pressed = on_button
        return Hardware(lights, buzzer, button, opened, own_factory)
    except BaseException:
        Hardware(None, None, None, opened, own_factory).close()
        raise


# -- the plugin -------------------------------------------------------------------

class StatusLightPlugin:
    """Turns the kiosk's hooks into a light state and beeps.  Every hook runs
    under one lock and returns at once; gpiozero's threads do the timing."""

    def __init__(self):
        self._lock = threading.Lock()
        self._hardware: Hardware | None = None
        self._kiosk = None
        self._settings: dict = {}
        self._online = False
        self._forwarding = False
        self._attention: set[str] = set()       # failed payments not followed up (kiosk.needs_attention())
        self._live: dict[str, str] = {}         # pending/forwarding payment id -> created_at
        self._reminder: tuple[str, str] | None = None   # (level, id of the payment that was oldest)
        self._battery: str | None = None        # a power plugin's warning in force: "low", "critical" or None
        self._store_alarm = False               # the store found damage (until the next start)
        self._shown: str | None = None

    # -- what tests and screens may read -----------------------------------------

    @property
    def active(self) -> bool:
        """GPIO devices are open and driven."""
        return self._hardware is not None

    @property
    def devices(self) -> tuple:
        """The gpiozero devices open now (empty when off)."""
        hardware = self._hardware
        return tuple(hardware.devices) if hardware else ()

    @property
    def state(self) -> str:
        """The state the light shows now (a key of ``LOOKS``)."""
        with self._lock:
            return self._state_now()

    # -- hooks ----------------------------------------------------------------------

    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_startup(self, kiosk):
        if NAME not in kiosk.config["notifier"]["use"]:
            return                      # loaded, but not chosen: touch no pin
        self._stop()                    # a kiosk opened before in this process and never shut down
        settings = dict(kiosk.config[SECTION])
        attention = {p.id for p in kiosk.needs_attention()}
        live = {p.id: p.created_at for p in kiosk.live()}
        problem = settings_problem(settings)
        if problem:
            log.warning("%s plugin: %s in [%s]; the status light, buzzer and button are off, sales go on",
                        NAME, problem, SECTION)
            hardware = None
        else:
            hardware = self._open(settings)
        with self._lock:
            self._hardware, self._kiosk, self._settings = hardware, (kiosk if hardware else None), settings
            self._online, self._forwarding = kiosk.online is True, False
            self._attention, self._live, self._reminder, self._shown = attention, live, None, None
            self._battery = None
            self._store_alarm = False
            if hardware is not None:
                self._refresh()

    @hookimpl
    def kiosk_shutdown(self, kiosk):
        if kiosk is self._kiosk:
            self._stop()

    @hookimpl
    def kiosk_notify(self, notice):
        with self._lock:
            if self._hardware is None:
                return
            kind, beep = notice.kind, None
            if kind == notices.ONLINE:
                self._online = True
            elif kind == notices.OFFLINE:
                self._online = False
            elif kind in (notices.APPROVED, notices.STORED_OFFLINE):
                beep = ("approved_beep_seconds", 1)
            elif kind in (SALE_DECLINED, notices.DECLINED):
                beep = ("declined_beep_seconds", 2)
                payment = notice.payment or {}
                if kind == notices.DECLINED and payment.get("id") and not payment.get("followed_up"):
                    self._attention.add(payment["id"])
            elif kind == notices.REMINDER:
                urgent = notice.level == "error"
                beep = ("declined_beep_seconds", 4) if urgent else ("approved_beep_seconds", 3)
                oldest = min(self._live, key=self._live.__getitem__, default=None)
                if oldest is not None:
                    self._reminder = (notice.level, oldest)
            elif kind == notices.BATTERY_LOW:
                self._battery, beep = "low", ("approved_beep_seconds", 2)
            elif kind == notices.BATTERY_CRITICAL:
                self._battery, beep = "critical", ("declined_beep_seconds", 3)
            elif kind == notices.POWER_RESTORED:
                self._battery = None
            elif kind == notices.STORE_ALARM:
                self._store_alarm, beep = True, ("declined_beep_seconds", 3)
            self._refresh(beep)

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        with self._lock:
            if self._hardware is None:
                return
            if payment.settled:
                self._live.pop(payment.id, None)
            else:
                self._live[payment.id] = payment.created_at
            if self._reminder is not None and self._reminder[1] not in self._live:
                self._reminder = None   # the payment the reminder was about has reached Stripe
            # the engine's rule (Kiosk.needs_attention): failed after the customer left
            if payment.state == FAILED and not payment.followed_up and (payment.offline or payment.interrupted_told):
                self._attention.add(payment.id)
            else:
                self._attention.discard(payment.id)
            self._refresh()

    @hookimpl
    def kiosk_sync_progress(self, done, total):
        with self._lock:
            if self._hardware is None:
                return
            self._forwarding = done < total
            self._refresh()

    # -- inside the lock -----------------------------------------------------------

    def _state_now(self) -> str:
        if self._battery == "critical":
            return "battery_critical"
        if self._store_alarm:
            return "store_alarm"
        if self._attention:
            return "attention"
        lights = self._hardware.lights if self._hardware else None
        if self._forwarding and (lights is None or lights.can_show("blue")):
            return "forwarding"
        if self._battery == "low":
            return "battery_low"
        if self._reminder is not None:
            return "reminder_urgent" if self._reminder[0] == "error" else "reminder"
        return "online" if self._online else "offline"

    def _refresh(self, beep: tuple[str, int] | None = None) -> None:
        """Show the state now (only if it changed: a blink restarted on every
        progress tick would flicker) and sound ``(length setting, times)``."""
        hardware = self._hardware
        try:
            state = self._state_now()
            if hardware.lights is not None and state != self._shown:
                hardware.lights.show(LOOKS[state])
            self._shown = state
            if beep is not None and hardware.buzzer is not None:
                seconds = self._settings[beep[0]]
                if seconds > 0:
                    hardware.buzzer.beep(seconds, beep[1])
        except Exception as exc:     # a pin library failing mid-run: go quiet, never stop a sale
            log.warning("%s plugin: GPIO failed (%s: %s); the status light, buzzer and button are off, "
                        "sales go on", NAME, type(exc).__name__, _one_line(exc))
            self._hardware, self._kiosk = None, None
            threading.Thread(target=hardware.close, name="status-light-close", daemon=True).start()

    # -- opening and closing ---------------------------------------------------------

    def _open(self, settings: dict) -> Hardware | None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")     # gpiozero warns once per pin library it tries
            try:
                hardware = open_hardware(settings, self._sync_pressed)
            except Exception as exc:
                log.warning("%s plugin: cannot open GPIO (%s: %s); the status light, buzzer and button are off, "
                            "sales go on", NAME, type(exc).__name__, _one_line(exc))
                hardware = None
        for warning in caught:
            log.debug("%s plugin: gpiozero: %s", NAME, warning.message)
        return hardware

    def _stop(self) -> None:
        with self._lock:
            hardware, self._hardware, self._kiosk = self._hardware, None, None
            self._shown = None
        if hardware is not None:
            hardware.close()        # outside the lock: the button's thread may be waiting for it

    def _sync_pressed(self) -> None:
        """The "sync now" button, on gpiozero's event thread."""
        kiosk = self._kiosk
        if kiosk is None:
            return
        kiosk.request_sync()
        with self._lock:
            if self._hardware is not None:
                self._refresh(("approved_beep_seconds", 1))     # a click: the press was heard


def _one_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [""])[0]


plugin = StatusLightPlugin()
