"""Printed receipts: what a receipt holds (kiosk/receipts.py), the ESC/POS bytes
python-escpos makes of it (its own ``Dummy`` printer), a network printer on
127.0.0.1 that gets the same bytes, printers that refuse or hang while sales
go on, `kiosk receipt` alone and through the running kiosk, Japanese text."""
from __future__ import annotations

import re
import socket
import threading
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from conftest import run_kiosk, write_config
from kiosk import Card, Payment, contains_card_number, hookimpl
from kiosk.boot import load_host
from kiosk.receipts import LEFT_OUT, OFFLINE_LINE, receipt_of

printing = pytest.importorskip("kiosk_builtins.receipt_printer.printing")
from escpos.printer import Dummy  # noqa: E402  (python-escpos, after the skip above)

WAIT = 60          # a deadline for a thread to get somewhere, never a measure of anything
GS_QR_STORE = b"\x1d(k"
RASTER = b"\x1dv0"     # GS v 0: a raster image
TOKYO = ZoneInfo("Asia/Tokyo")
ITEMS = [{"name": "Coffee", "price": 350, "quantity": 2}, {"name": "Bun", "price": 250, "quantity": 1}]


def qr_bytes(data: str) -> bytes:
    """GS ( k, function 80 ("store the data"), as the ESC/POS manual gives it."""
    body = b"1P0" + data.encode()
    return GS_QR_STORE + bytes((len(body) % 256, len(body) // 256)) + body


def sale(**fields) -> Payment:
    values = dict(id="kp_" + "ab" * 12, amount=1050, currency="usd", created_at="2026-12-05T14:59:30.000Z",
                  offline=True, card=Card("visa", "4242", 12, 2030), token="pm_card_visa", reader="simulated",
                  items=ITEMS, tip=100)
    values.update(fields)
    return Payment(**values)


class NetworkPrinter:
    """A raw-printing port (9100's job) on 127.0.0.1: each connection is one
    receipt, read to its end.  ``hold()`` stops accepting: with a backlog of
    zero and one connection waiting, the next printer connection hangs in
    connect, as a printer that is switched on but stuck does."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.got = threading.Semaphore(0)
        self._filler = None
        self.taken = 0

    def serve(self) -> "NetworkPrinter":
        self.server.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def hold(self) -> "NetworkPrinter":
        self.server.listen(0)
        self._filler = socket.create_connection(("127.0.0.1", self.port))
        return self

    def release(self) -> None:
        self.server.accept()[0].close()        # the filler: the printer's connection gets in next
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
            self.received.append(data)
            self.got.release()

    def next_receipt(self) -> bytes:
        assert self.got.acquire(timeout=WAIT), "the printer got no receipt"
        self.taken += 1
        return self.received[self.taken - 1]        # in the order they came

    def close(self) -> None:
        self.server.close()
        if self._filler is not None:
            self._filler.close()


@pytest.fixture
def network_printer():
    printer = NetworkPrinter()
    yield printer
    printer.close()


class Notices:
    """A notifier that keeps every notice, and says when a receipt one arrives."""

    def __init__(self):
        self.seen = []
        self.receipt = threading.Event()

    @hookimpl
    def kiosk_notify(self, notice):
        self.seen.append(notice)
        if notice.kind == "receipt":
            self.receipt.set()


class StuckPrinter:
    """A receipt printer plugin whose printer never answers until told to."""

    def __init__(self):
        self.go, self.started = threading.Event(), threading.Event()
        self.printed = []

    @hookimpl(tryfirst=True)
    def kiosk_receipt_printer(self):
        return "stuck"

    @hookimpl(tryfirst=True)
    def kiosk_print_receipt(self, receipt, automatic):
        self.started.set()
        self.go.wait()          # no time limit: a kiosk printing on the sale's thread would hang here
        self.printed.append((receipt, automatic))
        return "stuck"


class PaperSpy:
    """A receipt printer plugin that keeps what it is handed (the contract's side)."""

    def __init__(self):
        self.printed, self.got = [], threading.Semaphore(0)

    @hookimpl(tryfirst=True)
    def kiosk_print_receipt(self, receipt, automatic):
        self.printed.append((receipt, automatic))
        self.got.release()
        return "spy"

    def next(self):
        assert self.got.acquire(timeout=WAIT), "no receipt was printed"
        return self.printed[-1]


def host_with(**plugins):
    host = load_host()
    for name, plugin in plugins.items():
        host.register(plugin, name)
    host.check()
    return host


def config_with(tmp_path, api, connection="", notifier=("feed",), **printer):
    return write_config(tmp_path, api, kiosk={"id": "test-kiosk", "currency": "usd", "timezone": "Asia/Tokyo"},
                        notifier={"use": list(notifier)},
                        receipt_printer={"connection": connection, "shop_name": "Morning Market Coffee",
                                         "width": 48, **printer})


# -- what a receipt holds -------------------------------------------------------------------

def test_a_receipt_holds_the_sale_in_local_time_and_nothing_like_a_card_number():
    receipt = receipt_of(sale(items=[*ITEMS, {"name": "Gift 4242 4242 4242 4242", "price": 100, "quantity": 1}],
                              amount=1150), shop_name="Stall 4000 0566 5566 5556", zone=TOKYO)
    text = receipt.text(48)
    assert receipt.time == "2026-12-05 23:59 JST"            # 14:59 UTC is the evening before in Tokyo
    assert receipt.card == "VISA **** 4242" and OFFLINE_LINE in text
    assert re.search(r"^2 x Coffee +\$7\.00$", text, re.M) and re.search(r"^Tip +\$1\.00$", text, re.M)
    assert re.search(r"^Subtotal +\$10\.50$", text, re.M) and re.search(r"^TOTAL +\$11\.50$", text, re.M)
    assert receipt.shop_name == LEFT_OUT and f"1 x {LEFT_OUT}" in text.replace("\n", " ")
    assert not contains_card_number(text.replace(receipt.payment_id, "")) and "pm_card_visa" not in text
    assert all(len(line) <= 48 for line in receipt.text_lines(48))
    assert all(len(line) <= 32 for line in receipt.text_lines(32))


@pytest.mark.parametrize("state, offline, says", [
    ("pending", True, None), ("succeeded", True, "card checked: charged"),
    ("failed", True, "card checked: DECLINED"), ("voided", True, "VOIDED — not charged"),
    ("succeeded", False, None)])
def test_an_offline_sale_says_so_and_what_checking_the_card_came_to(state, offline, says):
    receipt = receipt_of(sale(state=state, offline=offline), shop_name="", zone=TOKYO)
    assert (receipt.offline == OFFLINE_LINE) == offline and receipt.outcome == says


def test_a_refund_record_prints_as_a_refund_of_its_sale():
    charged = sale(offline=False, state="succeeded", payment_intent="pi_123")
    refund = sale(id="kp_" + "cd" * 12, amount=200, offline=False, items=[], tip=0, token="", refund_of=charged.id,
                  payment_intent="pi_123")
    receipt = receipt_of(refund, shop_name="Stall", zone=TOKYO, sale=charged)
    assert receipt.kind == "refund" and receipt.rows()[1].left == "REFUND"
    assert f"Refund of {charged.id}" in receipt.text(48) and re.search(r"^REFUNDED +\$2\.00$", receipt.text(48), re.M)
    assert receipt.outcome == "refund kept: sent when back online" and receipt.payment_intent == "pi_123"


# -- the bytes python-escpos makes --------------------------------------------------------------

def test_dummy_printer_bytes_hold_the_receipt_and_the_payment_id_as_a_qr_code():
    receipt = receipt_of(sale(), shop_name="Morning Market Coffee", zone=TOKYO)
    data = printing.render(receipt, {"width": 48, "qr": True})
    assert data.startswith(b"\x1b@")                          # ESC @: the printer starts from its defaults
    for words in (b"Morning Market Coffee", b"2026-12-05 23:59 JST", b"Coffee", b"$7.00", b"Tip", b"$1.00",
                  b"$10.50", b"VISA **** 4242", b"approved offline - card checked later"):
        assert words in data, words
    assert qr_bytes(receipt.payment_id) in data and RASTER not in data
    assert b"\x1dV" in data                                   # GS V: cut the paper
    assert GS_QR_STORE not in printing.render(receipt, {"width": 48, "qr": False})


def test_a_name_cannot_smuggle_printer_commands():
    """ESC p opens a cash drawer, GS V cuts: a name is printed as text, never sent as commands."""
    receipt = receipt_of(sale(items=[{"name": "Bun\x1bp\x00\x19\xfa\x1dV\x00", "price": 250, "quantity": 1}],
                              amount=350), shop_name="Stall\r\n\x1b@", zone=TOKYO)
    data = printing.render(receipt, {"width": 32, "qr": False})
    assert b"\x1bp" not in data and data.count(b"\x1dV") == 1 and data.count(b"\x1b@") == 1
    assert receipt.items[0].name == "Bun p ú V" and receipt.shop_name == "Stall @"


def test_japanese_text_the_code_pages_lack_prints_as_an_image():
    receipt = receipt_of(sale(items=[{"name": "抹茶ラテ", "price": 500, "quantity": 1}], amount=600),
                         shop_name="朝市コーヒー", zone=TOKYO, language="ja")
    data = printing.render(receipt, {"width": 32, "qr": True})
    assert RASTER in data and qr_bytes(receipt.payment_id) in data
    # python-escpos alone would send Han characters as Chinese GB18030: none of it is sent as text
    assert "抹茶".encode("gb18030") not in data and "朝市".encode("gb18030") not in data
    printer = Dummy()
    assert not printing.printable(printer, receipt)
    # half-width katakana is in the printer's code page 1 (ESC t 1, "Katakana"): it prints as text
    katakana = receipt_of(sale(items=[{"name": "ｺｰﾋｰ", "price": 350, "quantity": 1}], amount=450),
                          shop_name="ｱｻｲﾁ", zone=TOKYO)
    data = printing.render(katakana, {"width": 32, "qr": False})
    assert RASTER not in data and b"\x1bt\x01" in data and "ｺｰﾋｰ".encode("cp932") in data


def test_without_a_japanese_font_the_receipt_still_prints_what_it_can(tmp_path, monkeypatch):
    """No CJK font on the machine (a file that is no font is none): the amounts still print, Kanji as "?"."""
    monkeypatch.setattr(printing, "CJK_FONTS", ())           # as on a system without fonts-noto-cjk
    (tmp_path / "not-a-font.ttf").write_text("nothing")
    receipt = receipt_of(sale(items=[{"name": "抹茶ラテ", "price": 500, "quantity": 1}], amount=600),
                         shop_name="朝市", zone=TOKYO)
    data = printing.render(receipt, {"width": 32, "qr": True, "cjk_font": str(tmp_path / "not-a-font.ttf")})
    assert RASTER not in data and b"1 x ????" in data and b"$6.00" in data and b"VISA **** 4242" in data
    assert "抹茶".encode("gb18030") not in data and qr_bytes(receipt.payment_id) in data


# -- printers on 127.0.0.1, sales that go on ---------------------------------------------------

def test_a_network_printer_gets_the_same_bytes_after_an_approved_sale(tmp_path, fake_stripe, open_kiosk,
                                                                      network_printer):
    network_printer.serve()
    config = config_with(tmp_path, fake_stripe.url, f"network:127.0.0.1:{network_printer.port}")
    kiosk = open_kiosk(config)
    assert kiosk.receipt_printer_ready() and kiosk.view.receipt_printer_ready()
    result = kiosk.take_sale(950, card="visa", items=ITEMS, tip=100)
    assert result.status == "approved"
    got = network_printer.next_receipt()
    stored = kiosk.store.get(result.payment.id)
    expected = printing.render(kiosk.receipt_printing.receipt(stored),
                               {"width": 48, "qr": True, "connection": "network"})
    assert got == expected
    local = datetime.fromisoformat(stored.created_at.replace("Z", "+00:00")).astimezone(TOKYO)
    assert f"{local:%Y-%m-%d %H:%M} JST".encode() in got and b"VISA **** 4242" in got
    assert qr_bytes(stored.id) in got and stored.payment_intent.encode() in got
    assert b"approved offline" not in got

    # the vendor asks again: the same receipt, through the view a screen holds
    assert kiosk.view.print_receipt(stored.id) is None
    assert network_printer.next_receipt() == expected


def test_a_japanese_stall_gets_its_receipt_as_an_image(tmp_path, fake_stripe, open_kiosk, network_printer):
    network_printer.serve()
    config = write_config(tmp_path, fake_stripe.url, kiosk={"timezone": "Asia/Tokyo", "language": "ja"},
                          receipt_printer={"connection": f"network:127.0.0.1:{network_printer.port}",
                                           "shop_name": "朝市コーヒー"})
    kiosk = open_kiosk(config)
    result = kiosk.take_sale(600, card="visa", items=[{"name": "抹茶ラテ", "price": 600, "quantity": 1}])
    assert result.status == "approved"
    got = network_printer.next_receipt()
    assert RASTER in got and qr_bytes(result.payment.id) in got and "朝市".encode("gb18030") not in got
    receipt = kiosk.receipt_printing.receipt(kiosk.store.get(result.payment.id))
    assert receipt.shop_name == "朝市コーヒー" and receipt.items[0].name == "抹茶ラテ" and receipt.words["total"] == "合計"


def test_a_serial_printer_gets_the_receipt_as_a_bluetooth_one_would(tmp_path, fake_stripe, open_kiosk):
    """A Bluetooth printer is a serial device (rfcomm): a pseudo-terminal stands in for the link."""
    import os
    master, slave = os.openpty()
    got, done = bytearray(), threading.Event()

    def printer_end():
        while not done.is_set():
            got.extend(os.read(master, 65536))
            if got.endswith(b"\x1dV\x00"):        # GS V 0: the cut ends a receipt
                done.set()
    threading.Thread(target=printer_end, daemon=True).start()
    try:
        config = config_with(tmp_path, "http://127.0.0.1:9", f"serial:{os.ttyname(slave)}:115200")
        kiosk = open_kiosk(config)
        result = kiosk.take_sale(1000, card="visa", behavior="force_offline")
        assert result.status == "approved_offline" and done.wait(WAIT)
        assert qr_bytes(result.payment.id) in got and b"approved offline - card checked later" in got
        kiosk.receipt_printing.close()       # the receipt thread has closed the port: ours can go
    finally:
        os.close(slave)
        if done.is_set():               # the reading thread has ended
            os.close(master)


def test_a_printer_that_refuses_the_connection_never_stops_a_sale(tmp_path, fake_stripe, open_kiosk):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))            # bound, never listening: connections are refused
    notices = Notices()
    config = config_with(tmp_path, "http://127.0.0.1:9", f"network:127.0.0.1:{closed.getsockname()[1]}",
                         notifier=("feed", "notices"))
    kiosk = open_kiosk(config, host=host_with(notices=notices))
    try:
        result = kiosk.take_sale(1000, card="visa", behavior="force_offline")
        assert result.status == "approved_offline"
        assert kiosk.store.get(result.payment.id).state == "pending"
        assert notices.receipt.wait(WAIT)
        told = [n for n in notices.seen if n.kind == "receipt"][0]
        assert "the sale stands" in told.message and result.payment.id in told.message
        assert "refused" in told.message.lower() and "\n" not in told.message
        assert told.payment["id"] == result.payment.id
        why = kiosk.print_receipt(result.payment.id)
        assert why.startswith("printing failed (receipt_printer): ") and "refused" in why.lower()
        assert kiosk.store.get(result.payment.id).state == "pending"       # nothing changed
    finally:
        closed.close()


def test_a_printer_that_hangs_never_holds_a_sale(tmp_path, fake_stripe, open_kiosk, network_printer):
    network_printer.hold()                   # connect hangs until released
    config = config_with(tmp_path, fake_stripe.url, f"network:127.0.0.1:{network_printer.port}",
                         timeout_seconds=120.0)
    kiosk = open_kiosk(config)
    first = kiosk.take_sale(1000, card="visa")
    second = kiosk.take_sale(1200, card="visa", behavior="force_offline")
    assert (first.status, second.status) == ("approved", "approved_offline")
    assert kiosk.store.get(first.payment.id).state == "succeeded"
    assert kiosk.store.get(second.payment.id).state == "pending"
    assert network_printer.received == []            # both sales done while the printer hangs
    network_printer.release()
    receipts = [network_printer.next_receipt(), network_printer.next_receipt()]
    assert qr_bytes(first.payment.id) in receipts[0] and qr_bytes(second.payment.id) in receipts[1]


def test_a_plugin_printer_stuck_forever_never_holds_sales_or_refunds(tmp_path, fake_stripe, open_kiosk):
    stuck = StuckPrinter()
    kiosk = open_kiosk(config_with(tmp_path, fake_stripe.url), host=host_with(stuck=stuck))
    try:
        results = [kiosk.take_sale(500 + n, card="visa") for n in range(3)]
        assert stuck.started.wait(WAIT)
        assert stuck.printed == []          # three sales returned while the first receipt is stuck
        assert [r.status for r in results] == ["approved"] * 3
        assert all(kiosk.store.get(r.payment.id).state == "succeeded" for r in results)
    finally:
        stuck.go.set()
    kiosk.receipt_printing.print_now(results[0].payment.id)      # queued behind the three: all out by then
    assert [(r.payment_id, automatic) for r, automatic in stuck.printed] == \
        [(r.payment.id, True) for r in results] + [(results[0].payment.id, False)]


def test_a_refund_prints_a_refund_receipt(tmp_path, fake_stripe, open_kiosk):
    spy = PaperSpy()
    kiosk = open_kiosk(config_with(tmp_path, fake_stripe.url), host=host_with(spy=spy))
    result = kiosk.take_sale(1000, card="visa")
    receipt, automatic = spy.next()
    assert automatic and receipt.kind == "sale" and receipt.payment_id == result.payment.id
    refund = kiosk.refund(result.payment.id, 250)
    assert refund.ok, refund.message
    receipt, automatic = spy.next()
    assert automatic and receipt.kind == "refund" and receipt.refund_of == result.payment.id
    assert receipt.amount == "$2.50" and receipt.payment_intent == result.payment.payment_intent


def test_auto_off_prints_only_when_asked(tmp_path, fake_stripe, open_kiosk, network_printer):
    network_printer.serve()
    kiosk = open_kiosk(config_with(tmp_path, fake_stripe.url, f"network:127.0.0.1:{network_printer.port}",
                                   auto=False))
    result = kiosk.take_sale(1000, card="visa")
    # one receipt thread, first come first served: a receipt printed unasked would be out before this one
    assert kiosk.print_receipt(result.payment.id) is None
    assert qr_bytes(result.payment.id) in network_printer.next_receipt()
    assert len(network_printer.received) == 1


def test_printing_adds_no_line_of_python_escpos_to_the_log(tmp_path, caplog):
    """python-escpos logs at INFO on the root logger on every print ("File
    printer enabled"): kept out of the kiosk's journal; the bytes still go."""
    import logging
    from kiosk_builtins.receipt_printer.connection import parse
    from kiosk_builtins.receipt_printer.printing import send
    caplog.set_level(logging.INFO)
    paper = tmp_path / "lp0"
    paper.write_bytes(b"")
    send(parse(f"file:{paper}"), b"one receipt", None)
    assert paper.read_bytes() == b"one receipt"
    assert [r.getMessage() for r in caplog.records if "escpos" in r.pathname] == []
    logging.getLogger("test").info("a kiosk line")          # the kiosk's own lines still pass
    assert "a kiosk line" in caplog.text


# -- `kiosk receipt` ------------------------------------------------------------------------------

def test_kiosk_receipt_reprints_and_says_why_not_in_one_line(tmp_path, fake_stripe):
    path = tmp_path / "paper.bin"
    config = config_with(tmp_path, fake_stripe.url, f"file:{path}")
    assert run_kiosk("init", "--config", config).returncode == 0
    charged = run_kiosk("charge", "12.00", "--config", config, "--json")
    payment_id = re.search(r'"id": "(kp_\w+)"', charged.stdout).group(1)
    assert qr_bytes(payment_id) in path.read_bytes()          # `kiosk charge` let its receipt out before exiting
    path.unlink()
    done = run_kiosk("receipt", payment_id, "--config", config)
    assert done.returncode == 0 and payment_id in done.stdout and qr_bytes(payment_id) in path.read_bytes()

    missing = run_kiosk("receipt", "kp_" + "0" * 24, "--config", config)
    assert missing.returncode == 1 and missing.stderr == f"kiosk: error: no payment kp_{'0' * 24} on this kiosk\n"

    off = config_with(tmp_path, fake_stripe.url, "")
    none = run_kiosk("receipt", payment_id, "--config", off)
    assert none.returncode == 1 and "[receipt_printer] connection" in none.stderr
    assert none.stderr.count("\n") == 1

    (tmp_path / "gone").mkdir()
    broken = config_with(tmp_path, fake_stripe.url, f"file:{tmp_path / 'gone' / 'nope' / 'lp0'}")
    failed = run_kiosk("receipt", payment_id, "--config", broken)
    assert failed.returncode == 1 and failed.stderr.startswith("kiosk: error: printing failed (receipt_printer): ")
    assert failed.stderr.count("\n") == 1


@pytest.mark.parametrize("connection, words", [
    ("bluetooth:AA:BB", "is not a printer connection"), ("usb:epson", "vendor and product ids in hex"),
    ("network:", "wants a host"), ("network:10.0.0.5:99999", "port must be 1-65535"),
    ("serial:ttyUSB0", "wants a device path")])
def test_a_bad_connection_is_one_line_naming_the_setting(tmp_path, connection, words):
    result = run_kiosk("status", "--config", config_with(tmp_path, "http://127.0.0.1:9", connection))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "receipt_printer" in result.stderr and "connection" in result.stderr and words in result.stderr


def test_kiosk_receipt_through_the_running_kiosk(tmp_path, fake_stripe):
    from test_local_socket import Running
    path = tmp_path / "paper.bin"
    config = config_with(tmp_path, fake_stripe.url, f"file:{path}", auto=False)
    assert run_kiosk("init", "--config", config).returncode == 0
    charged = run_kiosk("charge", "7.00", "--config", config, "--json")
    payment_id = re.search(r'"id": "(kp_\w+)"', charged.stdout).group(1)
    running = Running(config, tmp_path / "data").wait_serving()
    try:
        done = run_kiosk("receipt", payment_id, "--config", config)
        assert done.returncode == 0, done.stderr
        assert qr_bytes(payment_id) in path.read_bytes()
        status = run_kiosk("status", "--config", config)
        assert f"receipt_printer: file:{path} (when asked)" in status.stdout
    finally:
        running.stop()
