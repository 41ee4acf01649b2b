"""A card number typed into free text is refused, and never repeated:
the customer contact (``--customer``, the touchscreen's contact keypad),
every ``kiosk`` command-line value, every setting (``[kiosk] id``, a plugin's
setting), ``take_sale``'s test card name -- driven from outside against the
strict fake Stripe, then the output, the log, the notice feed, the data files
and the decrypted store (through the store API) are searched for the digits."""
from __future__ import annotations

import json
import os
import re

os.environ["SDL_VIDEODRIVER"] = "dummy"      # before pygame is imported anywhere in this process
os.environ["SDL_AUDIODRIVER"] = "dummy"

import pytest  # noqa: E402
from hypothesis import given, strategies as st  # noqa: E402

from conftest import run_kiosk, write_config  # noqa: E402
from kiosk import check_contact, contains_card_number  # noqa: E402
from kiosk.card_numbers import luhn_ok  # noqa: E402

# Stripe's and the networks' published test numbers (13 to 19 digits), each passing Luhn
CARDS = ["4242424242424242", "4000056655665556", "5555555555554444", "2223003122003222", "378282246310005",
         "6011111111111117", "3056930009020004", "36227206271667", "3566002020360505", "6200000000000005",
         "4222222222222", "6011000990139424", "4000000000000000006"]
TYPED = ["4242 4242 4242 4242", "4242-4242-4242-4242", "4242 4242 4242 4242 123", "３７８２ ８２２４６３ １０００５",
         "card: 5555 5555 5555 4444 exp 12/29", "4242424242424242@example.com"]
NOT_CARDS = ["4242424242424241", "424242424242", "+81 90 1234 5678", "090-1234-5678", "2026-12-05T09:00:00",
             "42424242424242424242424", "ana@example.com", "kiosk-12", "order 12345", "", "1.000.000.000.000.000"]


def independent_luhn(digits: str) -> bool:
    """Luhn as ISO/IEC 7812 states it, written apart from kiosk.card_numbers to check it."""
    doubled = "".join(str(int(d) * (2 if i % 2 else 1)) for i, d in enumerate(reversed(digits)))
    return sum(int(d) for d in doubled) % 10 == 0


def digits_of(text: str) -> str:
    return "".join(str(int(ch)) for ch in text if ch.isdigit())


# -- what counts as a card number ------------------------------------------------------

@pytest.mark.parametrize("text", CARDS + TYPED)
def test_card_numbers_however_typed_are_spotted(text):
    assert contains_card_number(text)


@pytest.mark.parametrize("text", NOT_CARDS)
def test_other_numbers_are_not(text):
    assert not contains_card_number(text)


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_luhn_agrees_with_the_standard(digits):
    assert luhn_ok(digits) is independent_luhn(digits)


@given(st.text(alphabet="0123456789", min_size=12, max_size=18), st.sampled_from([" ", "-", "", " - "]))
def test_any_number_with_a_right_check_digit_is_spotted_typed_in_groups(body, separator):
    number = body + next(d for d in "0123456789" if independent_luhn(body + d))
    grouped = separator.join(number[i:i + 4] for i in range(0, len(number), 4))
    assert contains_card_number(f"call me on {grouped} thanks")


def test_a_long_phone_number_that_passes_luhn_is_refused_saying_why():
    phone = "+44 7700 900 0000"
    assert not luhn_ok(digits_of(phone))          # 13 digits, failing Luhn: a phone number
    assert check_contact(phone) == phone
    lucky = "+44 7700 900 0007"                   # the same length, passing it: taken for a card number
    assert luhn_ok(digits_of(lucky))
    with pytest.raises(ValueError) as refused:
        check_contact(lucky)
    message = str(refused.value)
    assert "looks like a card number" in message and "phone number" in message and "e-mail" in message
    assert digits_of(lucky) not in digits_of(message) and "\n" not in message


@pytest.mark.parametrize("contact", ["not a contact", "ana@", "12", "4242424242424242"])
def test_a_refused_contact_is_never_repeated(contact):
    with pytest.raises(ValueError) as refused:
        check_contact(contact)
    assert contact not in str(refused.value)


# -- from outside: the command line ----------------------------------------------------

@pytest.fixture
def config(tmp_path, fake_stripe):
    path = write_config(tmp_path, fake_stripe.url)
    assert run_kiosk("init", "--config", path).returncode == 0
    return path


def assert_nowhere(number: str, texts: list[str], data_dir, store) -> None:
    """Not in what was printed or logged, not in any data file, not in the
    decrypted store (through its API): payments, settled payments, notices."""
    digits = digits_of(number)
    for text in texts:
        assert digits not in digits_of(text) and number not in text, text
    for path in data_dir.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            assert digits.encode() not in raw and number.encode() not in raw, path
    stored = json.dumps([p.to_record() for p in [*store.live(), *store.settled()]] + store.notices(1000),
                        ensure_ascii=False)
    assert digits not in digits_of(stored) and number not in stored


FIELDS = [
    ("customer contact", ["charge", "5.00", "--offline", "--customer", "{n}"]),
    ("customer contact as e-mail", ["charge", "5.00", "--offline", "--customer", "{n}@example.com"]),
    ("customer contact, one argument", ["charge", "5.00", "--offline", "--customer={n}"]),
    ("test card name", ["charge", "5.00", "--card", "{n}"]),
    ("amount", ["charge", "{n}"]),
    ("currency", ["charge", "5.00", "--currency", "{n}"]),
    ("since", ["queue", "--since", "{n}"]),
    ("command", ["{n}"]),
]


@pytest.mark.parametrize("number", ["4242 4242 4242 4242", "378282246310005", "6011-1111-1111-1117"])
@pytest.mark.parametrize("field, argv", FIELDS, ids=[f[0] for f in FIELDS])
def test_every_command_line_value_refuses_a_card_number_unrepeated(config, fake_stripe, open_kiosk, tmp_path,
                                                                   field, argv, number):
    args = [a.replace("{n}", number) for a in argv]
    result = run_kiosk("-v", *args, "--config", config)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "looks like a card number" in result.stderr and result.stderr.strip().count("\n") == 0
    assert result.stdout == ""
    assert fake_stripe.payment_intents == []
    kiosk = open_kiosk(config, create=False)
    assert_nowhere(number, [result.stdout, result.stderr], tmp_path / "data", kiosk.store)


def test_a_plain_contact_still_goes_through(config, fake_stripe):
    result = run_kiosk("charge", "5.00", "--offline", "--customer", "+1 555 0100", "--config", config)
    assert result.returncode == 0 and "APPROVED OFFLINE" in result.stdout


def test_a_bad_contact_is_refused_without_repeating_it(config, open_kiosk, tmp_path):
    result = run_kiosk("charge", "5.00", "--offline", "--customer", "call me maybe", "--config", config)
    assert result.returncode == 2 and "neither an e-mail address nor a phone number" in result.stderr
    assert "call me maybe" not in result.stderr


SETTINGS = [
    ("kiosk", "id", "[kiosk] id", '"{n}"'),
    ("kiosk", "id", "[kiosk] id", "{d}"),                     # a TOML integer: "must be str, not int ..." would repeat it
    ("reader.simulated", "card", "[reader.simulated] card", '"{n}"'),      # a plugin's setting, checked by the core
    ("kiosk", "offline_behavior", "[kiosk] offline_behavior", '"{n}"'),    # a choice whose error lists the value
]


@pytest.mark.parametrize("section, key, where, value", SETTINGS)
def test_a_setting_that_looks_like_a_card_number_is_refused_unrepeated(tmp_path, fake_stripe, section, key,
                                                                       where, value):
    number = "4242 4242 4242 4242"
    path = write_config(tmp_path, fake_stripe.url)
    text = path.read_text()
    assignment = f'{key} = {value.replace("{n}", number).replace("{d}", digits_of(number))}\n'
    if f"[{section}]" in text:
        text = re.sub(rf"^{re.escape(key)} = .*\n", "", text, flags=re.M) if section == "kiosk" else text
        text = text.replace(f"[{section}]\n", f"[{section}]\n{assignment}", 1)
    else:
        text += f"\n[{section}]\n{assignment}"
    path.write_text(text)
    for command in (("init",), ("status",), ("charge", "5.00")):
        result = run_kiosk(*command, "--config", path)
        assert result.returncode == 2, result.stderr
        assert f"config {where} looks like a card number" in result.stderr
        assert result.stderr.strip().count("\n") == 0
        assert digits_of(number) not in digits_of(result.stdout + result.stderr)
    assert fake_stripe.payment_intents == []


def test_take_sale_refuses_a_card_number_as_contact_or_test_card(config, fake_stripe, open_kiosk):
    kiosk = open_kiosk(config)
    number = "5555 5555 5555 4444"
    for kwargs in ({"customer": number}, {"card": number}):
        with pytest.raises(ValueError) as refused:
            kiosk.take_sale(500, confirm=lambda offer: True, **kwargs)
        assert "looks like a card number" in str(refused.value) and number not in str(refused.value)
    fake_stripe.set_offline(True)
    asked = []
    # typed on the confirm step: refused before the card is read, nothing stored
    with pytest.raises(ValueError):
        kiosk.take_sale(500, behavior="prefer_online",
                        confirm=lambda offer: asked.append(offer) or setattr(offer, "customer", number) or True)
    assert asked and kiosk.store.live() == [] and fake_stripe.payment_intents == []


# -- from outside: the touchscreen's contact keypad ------------------------------------

@pytest.fixture
def screen(tmp_path, fake_stripe, open_kiosk, touchscreens):
    pytest.importorskip("pygame")

    def open_screen(language="en"):
        path = write_config(tmp_path, fake_stripe.url, display={"use": "touchscreen"}, kiosk={"language": language})
        kiosk = open_kiosk(path)
        display = touchscreens(kiosk)
        return kiosk, display, path

    return open_screen


@pytest.mark.parametrize("language, words", [("en", "Looks like a card number"), ("ja", "カード番号のよう")])
def test_a_card_number_typed_as_contact_is_wiped_and_refused(screen, fake_stripe, open_kiosk, tmp_path, caplog,
                                                             language, words):
    from test_touchscreen import on_screen, tap, tap_keys, type_amount, until
    kiosk, display, path = screen(language)
    fake_stripe.set_offline(True)
    number = "4242424242424242"
    type_amount(display, "5")
    tap(display, "charge")
    until(display, lambda: display.ui.screen == "confirm_offline")
    tap(display, "contact")
    tap_keys(display, number)
    tap(display, "contact_done")
    assert display.ui.screen == "contact" and on_screen(display, words)
    assert display.ui.contact == ""
    assert not any(digits_of(number) in digits_of(text) for text in display.texts())
    tap_keys(display, number)                                  # typed again, then Confirm straight away
    tap(display, "contact_done")
    assert display.ui.contact == "" and display.ui.screen == "contact"
    tap(display, "contact_done")                               # empty: no contact, back to the question
    tap(display, "offline_confirm")
    until(display, lambda: display.ui.screen == "result")
    [payment] = kiosk.store.live()
    assert payment.customer is None and payment.offline
    assert_nowhere(number, [caplog.text], tmp_path / "data", kiosk.store)


def test_a_path_with_a_long_run_of_digits_is_not_a_card_number(tmp_path, fake_stripe):
    """Temp folders are named with digits (/tmp/test-12117-24469585821233
    passes the Luhn check): a path setting or a path argument is not free text."""
    from conftest import run_kiosk, write_config
    from kiosk.card_numbers import contains_card_number
    assert contains_card_number("/tmp/test-12117-24469585821233")      # as free text it would be refused
    folder = tmp_path / "test-12117-24469585821233"
    folder.mkdir()
    config = write_config(folder, fake_stripe.url, storage={"path": str(folder / "data")})
    assert run_kiosk("init", "--config", str(config)).returncode == 0
    assert (folder / "data" / "kiosk.key").exists()
