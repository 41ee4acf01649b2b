"""The status light, buzzer and "sync now" button (plugins/status_light.py),
driven by the real kiosk against the fake Stripe peer, on gpiozero's own mock
pin factory: every assertion reads pin levels and the pins' timed history."""
from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

import pytest
from gpiozero import LED, Button, Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from kiosk.boot import load_host
from kiosk.hookspecs import hookimpl
from kiosk.payment import utcnow
from kiosk_builtins.status_light import plugin as status_light

from conftest import write_config

GREEN, AMBER, RED, BLUE, BUZZER, BUTTON = 17, 27, 22, 23, 18, 24
RGB_R, RGB_G, RGB_B = 5, 6, 13
APPROVED_BEEP, DECLINED_BEEP = 0.1, 0.15
TOLERANCE = 0.05           # gpiozero's own assert_states_and_times allows as much

SEPARATE = {"green_pin": GREEN, "amber_pin": AMBER, "red_pin": RED, "blue_pin": BLUE,
            "buzzer_pin": BUZZER, "button_pin": BUTTON,
            "approved_beep_seconds": APPROVED_BEEP, "declined_beep_seconds": DECLINED_BEEP}
RGB = {"rgb_red_pin": RGB_R, "rgb_green_pin": RGB_G, "rgb_blue_pin": RGB_B, "buzzer_pin": BUZZER,
       "approved_beep_seconds": APPROVED_BEEP, "declined_beep_seconds": DECLINED_BEEP}


@pytest.fixture
def mock_pins():
    """gpiozero's mock pin factory (PWM-capable pins), never the default: put
    in for the test, reset and replaced afterwards."""
    previous = Device.pin_factory
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    yield Device.pin_factory
    if isinstance(Device.pin_factory, MockFactory):
        Device.pin_factory.reset()
    Device.pin_factory = previous


@pytest.fixture
def light_kiosk(tmp_path, fake_stripe, mock_pins, open_kiosk):
    """Open a real kiosk with ``status_light`` chosen in ``[notifier] use``.
    (Asks for the pins before ``open_kiosk`` so kiosks close before the pins reset.)"""
    def opener(light: dict | None = None, *extra_plugins, use=("feed", "status_light"), **sections):
        host = load_host()                  # finds status_light through its entry point
        for name, extra in extra_plugins:
            host.register(extra, name)
        host.check()
        path = write_config(tmp_path, fake_stripe.url, notifier={"use": list(use)},
                            notifier__status_light=dict(SEPARATE if light is None else light), **sections)
        return open_kiosk(path, host=host)
    return opener


def pin(number):
    return Device.pin_factory.pin(number)


def level(number) -> float:
    return float(pin(number).state)


def pulses(number) -> list[tuple[float, float | None]]:
    """From a mock pin's history (each entry's timestamp is the time since the
    previous change): (seconds on, seconds off after) for each time it went on."""
    states = pin(number).states
    found = []
    for i in range(len(states)):
        if states[i].state and (i == 0 or not states[i - 1].state):
            on = states[i + 1].timestamp if i + 1 < len(states) else None
            off = states[i + 2].timestamp if i + 2 < len(states) else None
            if on is not None:
                found.append((on, off))
    return found


def close_to(actual, expected) -> bool:
    return actual is not None and math.isclose(actual, expected, abs_tol=TOLERANCE)


def quiet(number=BUZZER):
    """Wait for the beep under way to end, then start the pin's history afresh."""
    time.sleep(0.5)
    assert level(number) == 0
    pin(number).clear_states()


def steady(number, seconds=0.3) -> bool:
    """The pin does not change for ``seconds``."""
    return all_steady([number], seconds)


def all_steady(numbers, seconds=0.3) -> bool:
    """None of the pins changes for ``seconds`` (watched over the same stretch)."""
    for number in numbers:
        pin(number).clear_states()
    time.sleep(seconds)
    return all(len(pin(number).states) == 1 for number in numbers)


class Sampler:
    """Reads the LED pins whenever a payment changes during forwarding."""

    def __init__(self, *pins):
        self.pins, self.seen = pins, []

    @hookimpl
    def kiosk_payment_changed(self, payment, previous_state):
        if previous_state is not None:
            self.seen.append({number: level(number) for number in self.pins})


def warnings_from_plugin(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "kiosk.status_light" and r.levelno >= logging.WARNING]


# -- states ---------------------------------------------------------------------------

def test_green_when_online_amber_steady_when_offline_and_a_beep_for_an_offline_sale(light_kiosk, fake_stripe):
    kiosk = light_kiosk()
    assert level(AMBER) == 1 and level(GREEN) == 0          # not known to be online yet
    kiosk.check_online()
    assert (level(GREEN), level(AMBER), level(RED), level(BLUE)) == (1, 0, 0, 0)
    fake_stripe.set_offline(True)
    pin(BUZZER).clear_states()
    result = kiosk.take_sale(1000, card="visa", confirm=lambda offer: True)
    assert result.status == "approved_offline"
    assert (level(GREEN), level(AMBER), level(RED), level(BLUE)) == (0, 1, 0, 0)
    assert steady(AMBER) and level(AMBER) == 1              # steady, not blinking
    [(on, _)] = pulses(BUZZER)                              # approved offline: one short beep
    assert close_to(on, APPROVED_BEEP)


def test_an_approved_sale_is_one_beep_of_the_configured_length(light_kiosk):
    kiosk = light_kiosk()
    kiosk.check_online()
    pin(BUZZER).clear_states()
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    time.sleep(APPROVED_BEEP * 2 + 0.15)
    [(on, off)] = pulses(BUZZER)
    assert close_to(on, APPROVED_BEEP) and level(BUZZER) == 0


def test_a_sale_declined_at_the_till_is_two_beeps(light_kiosk):
    kiosk = light_kiosk()
    kiosk.check_online()
    pin(BUZZER).clear_states()
    assert kiosk.take_sale(1000, card="declined").status == "declined"
    time.sleep(DECLINED_BEEP * 4 + 0.15)
    beeps = pulses(BUZZER)
    assert len(beeps) == 2, beeps
    assert all(close_to(on, DECLINED_BEEP) for on, _ in beeps)
    assert close_to(beeps[0][1], DECLINED_BEEP)             # the gap between the two
    assert level(BUZZER) == 0
    # the customer is still there: nothing to follow up, so the light stays green
    assert kiosk.needs_attention() == []
    assert (level(GREEN), level(RED)) == (1, 0) and steady(GREEN)


def test_a_forwarded_decline_beeps_twice_and_blinks_red_until_followed_up(light_kiosk, fake_stripe):
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    sale = kiosk.take_sale(1000, card="insufficient_funds")
    assert sale.status == "approved_offline"
    quiet(BUZZER)
    pin(RED).clear_states()
    report = kiosk.forward()
    assert report.failed == 1
    time.sleep(1.15)
    beeps = pulses(BUZZER)
    assert len(beeps) == 2 and all(close_to(on, DECLINED_BEEP) for on, _ in beeps)
    blinks = pulses(RED)
    assert blinks and close_to(blinks[0][0], 0.5) and close_to(blinks[0][1], 0.5)
    assert level(GREEN) == level(AMBER) == level(BLUE) == 0
    assert status_light.state == "attention"

    kiosk.close()                                           # still there after a restart
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    time.sleep(0.6)
    assert status_light.state == "attention" and pulses(RED)

    kiosk.mark_followed_up(sale.payment.id)
    assert status_light.state == "offline"                  # nothing has checked Stripe since the restart
    assert steady(RED) and level(RED) == 0 and level(AMBER) == 1


def test_forwarding_shows_blue_for_the_whole_pass_but_not_over_attention(light_kiosk):
    sampler = Sampler(GREEN, BLUE, RED)
    kiosk = light_kiosk(None, ("sampler", sampler), kiosk={"offline_behavior": "force_offline"})
    for _ in range(3):
        kiosk.take_sale(1000, card="visa")
    pin(BLUE).clear_states()
    assert kiosk.forward().succeeded == 3
    assert sampler.seen and all(s[BLUE] == 1 and s[GREEN] == 0 for s in sampler.seen)
    assert len(pulses(BLUE)) == 1                           # one steady stretch, not a flicker per payment
    assert level(BLUE) == 0 and level(GREEN) == 1

    kiosk.take_sale(1000, card="declined")
    kiosk.forward()
    kiosk.take_sale(1000, card="visa")
    sampler.seen.clear()
    kiosk.forward()
    assert sampler.seen and all(s[BLUE] == 0 for s in sampler.seen)   # attention outranks forwarding
    assert status_light.state == "attention"


def test_reminders_blink_amber_slowly_then_fast_when_urgent_until_the_payment_is_sent(light_kiosk):
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    kiosk.take_sale(1000, card="visa")
    kiosk.check_online()
    assert level(GREEN) == 1

    kiosk.clock = lambda: utcnow() + timedelta(hours=13)
    quiet(BUZZER)
    pin(AMBER).clear_states()
    [notice] = kiosk.remind()
    assert notice.level == "warning"
    time.sleep(1.15)
    assert level(GREEN) == 0
    [(on, _)] = pulses(AMBER)
    assert close_to(on, 1.0)                                 # slow: 1 s on, 1 s off
    beeps = pulses(BUZZER)
    assert len(beeps) == 3 and all(close_to(b, APPROVED_BEEP) for b, _ in beeps)

    kiosk.clock = lambda: utcnow() + timedelta(hours=23, minutes=30)
    quiet(BUZZER)
    pin(AMBER).clear_states()
    [notice] = kiosk.remind()
    assert notice.level == "error"
    time.sleep(1.3)
    blinks = pulses(AMBER)
    assert len(blinks) >= 2 and all(close_to(on, 0.25) for on, _ in blinks)   # fast
    beeps = pulses(BUZZER)
    assert len(beeps) == 4 and all(close_to(b, DECLINED_BEEP) for b, _ in beeps)

    assert kiosk.forward().succeeded == 1
    assert status_light.state == "online"
    assert steady(GREEN) and level(GREEN) == 1 and level(AMBER) == 0


def test_the_sync_button_asks_for_a_sync_and_clicks(light_kiosk):
    kiosk = light_kiosk()
    kiosk.wake.clear()
    pin(BUZZER).clear_states()
    pin(BUTTON).drive_low()                                  # pressed: the button pulls the pin to ground
    pin(BUTTON).drive_high()
    assert kiosk.wake.is_set()
    time.sleep(APPROVED_BEEP + 0.1)
    [(on, _)] = pulses(BUZZER)
    assert close_to(on, APPROVED_BEEP)


# -- hardware variants -------------------------------------------------------------------

@pytest.mark.parametrize("active_high", [True, False])
def test_rgb_led_mixes_amber_and_green_at_the_configured_brightness(light_kiosk, fake_stripe, active_high):
    kiosk = light_kiosk(dict(RGB, brightness=0.5, active_high=active_high),
                        kiosk={"offline_behavior": "force_offline"})

    def colour():
        rgb = [level(n) for n in (RGB_R, RGB_G, RGB_B)]
        return tuple(round(v if active_high else 1 - v, 3) for v in rgb)   # common anode: low is lit
    assert colour() == (0.5, 0.25, 0.0)                      # amber: not known to be online
    kiosk.check_online()
    assert colour() == (0.0, 0.5, 0.0)                       # green
    kiosk.take_sale(1000, card="declined")
    pin(RGB_R).clear_states()
    kiosk.forward()
    time.sleep(1.15)
    lit, dark = (0.5, 0.0) if active_high else (0.5, 1.0)   # red at half brightness, blinking
    assert {round(s.state, 3) for s in pin(RGB_R).states[1:]} == {lit, dark}
    if active_high:
        [(on, off), *_] = pulses(RGB_R)
        assert close_to(on, 0.5) and close_to(off, 0.5)
    assert status_light.state == "attention" and colour()[1:] == (0.0, 0.0)


def test_a_subset_of_leds_works_amber_falls_back_to_red_and_forwarding_is_not_shown_without_blue(
        light_kiosk, fake_stripe, mock_pins):
    sampler = Sampler(GREEN, RED)
    kiosk = light_kiosk({"green_pin": GREEN, "red_pin": RED}, ("sampler", sampler),
                        kiosk={"offline_behavior": "force_offline"})
    assert level(RED) == 1 and level(GREEN) == 0             # offline shown on red, steady
    assert steady(RED)
    kiosk.take_sale(1000, card="visa")
    assert kiosk.forward().succeeded == 1
    assert sampler.seen and all(s[GREEN] == 1 and s[RED] == 0 for s in sampler.seen)
    assert level(GREEN) == 1 and level(RED) == 0
    assert {p.info.name for p in mock_pins.pins.values()} == {f"GPIO{GREEN}", f"GPIO{RED}"}   # nothing else touched


def test_a_tonal_buzzer_plays_a_tone_not_a_steady_level(light_kiosk):
    kiosk = light_kiosk(dict(SEPARATE, buzzer_type="tonal", buzzer_tone_hz=2000.0, approved_beep_seconds=0.3))
    kiosk.check_online()
    pin(BUZZER).clear_states()
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    assert pin(BUZZER).frequency == pytest.approx(2000.0)   # sounding now, at the configured pitch
    time.sleep(0.75)
    [(on, _)] = pulses(BUZZER)
    assert close_to(on, 0.3)
    assert max(s.state for s in pin(BUZZER).states) == 0.5  # square wave, half duty
    assert pin(BUZZER).frequency is None and level(BUZZER) == 0


# -- robustness ------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["named_factory_missing", "no_default_factory"])
def test_without_gpio_the_kiosk_sells_with_one_warning(light_kiosk, fake_stripe, caplog, monkeypatch, how):
    caplog.set_level(logging.DEBUG)
    light = dict(SEPARATE)
    if how == "named_factory_missing":
        light["pin_factory"] = "no_such_factory"
    else:                                                    # no Raspberry Pi: gpiozero finds no pin library
        monkeypatch.setattr(Device, "pin_factory", None)
        monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no_such_factory")
    kiosk = light_kiosk(light)
    assert not status_light.active
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    assert kiosk.take_sale(1000, card="declined").status == "declined"
    fake_stripe.set_offline(True)
    assert kiosk.take_sale(1000, card="visa", confirm=lambda offer: True).status == "approved_offline"
    fake_stripe.set_offline(False)
    assert kiosk.forward().succeeded == 1
    kiosk.close()
    [warning] = warnings_from_plugin(caplog)
    assert "status_light" in warning and "cannot open GPIO" in warning and "no_such_factory" in warning
    assert "raised in" not in caplog.text                   # nothing reached the host's isolation


@pytest.mark.parametrize("light, words", [
    (dict(SEPARATE, buzzer_pin=GREEN), f"pin {GREEN} is set for both green_pin and buzzer_pin"),
    (dict(RGB, rgb_blue_pin=0), "set all three of rgb_red_pin"),
    (dict(RGB, green_pin=GREEN), "not both"),
    (dict(SEPARATE, brightness=1.5), "brightness must be from 0 to 1"),
    (dict(SEPARATE, buzzer_type="tonal", buzzer_tone_hz=50.0), "buzzer_tone_hz must be from 200 to 6000"),
    ({}, "no pins are set"),
])
def test_bad_settings_leave_the_light_off_with_one_warning(light_kiosk, mock_pins, caplog, light, words):
    caplog.set_level(logging.INFO)
    kiosk = light_kiosk(light)
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    [warning] = warnings_from_plugin(caplog)
    assert words in warning and "[notifier.status_light]" in warning
    assert not status_light.active and not mock_pins.pins   # no pin was claimed


def test_a_pin_already_in_use_is_one_warning_not_a_crash(light_kiosk, mock_pins, caplog):
    caplog.set_level(logging.INFO)
    other = LED(RED)                                        # someone else holds the red pin
    try:
        kiosk = light_kiosk()
        assert kiosk.take_sale(1000, card="visa").status == "approved"
        [warning] = warnings_from_plugin(caplog)
        assert "cannot open GPIO" in warning and "GPIOPinInUse" in warning
        assert not status_light.active
        LED(GREEN).close()                                  # what it opened before failing was given back
    finally:
        other.close()


def test_loaded_but_not_chosen_touches_no_pin(light_kiosk, mock_pins):
    kiosk = light_kiosk(use=("feed",))
    assert kiosk.take_sale(1000, card="visa").status == "approved"
    assert not status_light.active and not mock_pins.pins


def test_many_forwarding_threads_at_once(light_kiosk, caplog):
    caplog.set_level(logging.INFO)
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"}, stripe={"concurrency": 8})
    cards = ["visa"] * 14 + ["declined"] * 2
    for card in cards:
        kiosk.take_sale(1000, card=card)
    report = kiosk.forward()
    assert (report.succeeded, report.failed) == (14, 2)
    assert "raised in" not in caplog.text
    assert status_light.state == "attention" and level(BLUE) == 0
    for payment in kiosk.needs_attention():
        kiosk.mark_followed_up(payment.id)
    assert status_light.state == "online" and level(GREEN) == 1 and level(RED) == 0


@pytest.mark.parametrize("wiring", ["rgb", "separate"])
def test_shutdown_turns_everything_off_and_gives_the_pins_back(light_kiosk, monkeypatch, wiring):
    if wiring == "separate":
        # plain mock pins keep their level when closed: only switching off first leaves them dark
        monkeypatch.setattr(Device, "pin_factory", MockFactory())
        light, pins = SEPARATE, (GREEN, AMBER, RED, BLUE, BUZZER)
    else:
        light, pins = dict(RGB, button_pin=BUTTON), (RGB_R, RGB_G, RGB_B, BUZZER)
    kiosk = light_kiosk(light, kiosk={"offline_behavior": "force_offline"})
    kiosk.take_sale(1000, card="declined")
    assert level(BUZZER) == 1                               # beeping
    if wiring == "rgb":
        kiosk.forward()                                     # red blinking, beeping
        assert status_light.state == "attention"
    else:
        assert level(AMBER) == 1                            # offline, steady
    devices = status_light.devices
    assert len(devices) == (6 if wiring == "separate" else 3)     # LEDs or RGB LED, buzzer, button
    kiosk.close()
    assert not status_light.active and all(device.closed for device in devices)
    assert all(level(n) == 0 for n in pins)
    assert all_steady(pins, 0.6)                            # no blink or beep thread left
    for number in pins:
        LED(number).close()                                 # every pin was given back
    Button(BUTTON).close()
    kiosk.wake.clear()
    pin(BUTTON).drive_low()                                 # the button no longer reaches the kiosk
    assert not kiosk.wake.is_set()


def test_a_damaged_store_blinks_red_at_every_start_until_recovered(light_kiosk, tmp_path):
    """A flipped byte in the queue: sales go on, and each `kiosk run` start
    raises the alarm on the light (red 0.25 s on, 0.75 s off) until recover()."""
    import threading

    from kiosk import background
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    for amount in (1000, 1100):
        assert kiosk.take_sale(amount, card="visa").ok
    kiosk.close()
    live = tmp_path / "data" / "live.kdb"
    raw = bytearray(live.read_bytes())
    raw[len(raw) - 20] ^= 1
    live.write_bytes(bytes(raw))
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    stop = threading.Event()
    stop.set()                                    # `kiosk run` starting: the loop raises saved alarms first
    background.run(kiosk, stop)
    time.sleep(1.1)
    assert status_light.state == "store_alarm"
    blinks = pulses(RED)
    assert blinks and close_to(blinks[0][0], 0.25) and close_to(blinks[0][1], 0.75)
    assert kiosk.take_sale(1200, card="visa").ok                   # selling goes on
    kiosk.store.recover()
    kiosk.close()
    kiosk = light_kiosk(kiosk={"offline_behavior": "force_offline"})
    background.run(kiosk, stop)
    assert status_light.state != "store_alarm"
