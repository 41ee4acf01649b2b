"""The ``kiosk`` command.  Its options, output and exit codes are a contract
for scripts and tests:

    0  done (a sale approved online or stored offline; Stripe reached;
       ``kiosk check``: ready to sell offline; ``kiosk void``/``refund``:
       voided (or already voided), refunded, or the refund kept and sent by
       the next pass)
    1  a sale declined, refused or not confirmed; ``kiosk check``: not ready;
       ``kiosk void``/``refund``: not possible, the line says why (declined,
       not sent yet, more than is left to refund, may already be charged
       while Stripe is unreachable, Stripe refused the refund...);
       ``kiosk receipt``: not printed -- no receipt printer set up, no such
       payment, or the printer failed or did not answer (the line says why)
    2  usage, configuration or plugin error (``kiosk charge --item`` naming
       an item not in ``[[catalog.items]]``, items not adding up to AMOUNT)
    3  Stripe unreachable (``kiosk sync``; nothing changed)
    4  no usable Stripe API key: none is set, or Stripe rejected it
       (``kiosk sync``; nothing sent, nothing lost)
    5  the queue on disk cannot be trusted, or another kiosk process holds it
       (a file that is damaged but still partly reads is salvaged instead:
       the kiosk opens, alarms, and ``kiosk recover`` exits 1 if something
       could not be read)
       (while ``kiosk run`` holds it, it runs ``status``, ``queue``,
       ``notices``, ``sync``, ``charge``, ``void`` and ``refund`` itself
       and more: kiosk/local_socket.py COMMANDS)
    6  ``kiosk export``/``import``: the export file cannot be written (exists,
       disk full, read-only) or read (wrong passphrase, cut, changed, another
       format version): nothing changed on either kiosk -- or it was written
       and the queue could not record the move (said so; never charged twice)
    7  the data partition refused a write, any command: disk full (or over
       quota), or a write error (the card failing).  What is stored is intact
       and nothing is shown done that is not stored; ``kiosk charge`` says
       how far the sale got ("not stored — disk full", "charged at Stripe —
       do not charge again", ...)

Errors are one line on stderr.  Never prints a card number, token or API key:
a value that looks like a card number (kiosk/card_numbers.py) is refused with
exit 2 without being repeated.
"""
from __future__ import annotations

import argparse
import inspect
import itertools
import json
import logging
import os
import signal
import sys
import textwrap
import threading
from datetime import datetime, timedelta
from pathlib import Path

from .card_numbers import refuse_card_number
from .config import ConfigError, default_path
from .host import PluginError, package_version
from .interfaces import ReaderError, StoreAlarm, StoreBusy
from . import quick_items
from .money import MoneyError, currency_code, format_amount, parse_amount
from .payment import iso, parse_iso
from .sale_result import WINDOW_HOURS

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_OFFLINE, EXIT_AUTH, EXIT_STORE = 0, 1, 2, 3, 4, 5
EXIT_EXPORT_FILE = 6
PASSPHRASE_ENV = "KIOSK_PASSPHRASE"     # for scripts; a passphrase is never taken on the command line
EXIT_DISK = 7


class Fail(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _open(args, create: bool = False):
    if getattr(args, "running", None) is not None:     # served by `kiosk run`: its own kiosk, already open
        return args.running
    from .boot import open_kiosk
    return open_kiosk(Path(args.config), create=create)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- commands -------------------------------------------------------------------

def cmd_init(args) -> int:
    from .boot import load_config, load_host
    host = load_host()
    config = load_config(host, Path(args.config))
    # kiosk.key, or the same key sealed to this Pi ([storage.tinydb] key_protector = "device")
    key_existed = any((config.data_dir / name).exists() for name in ("kiosk.key", "kiosk.key.device"))
    kiosk = _open(args, create=True)
    try:
        print(f"data directory: {config.data_dir}")
        print("key: kept the existing one" if key_existed else "key: created (mode 0600)")
    finally:
        kiosk.close()
    return EXIT_OK


def _confirm_prompt(args):
    def confirm(offer) -> bool:
        # the reason as it is: a missing or rejected key is not "unreachable" (the sale is sent once it is fixed)
        print(f"{offer.reason[:1].upper()}{offer.reason[1:]}. Store this sale offline? "
              f"{format_amount(offer.amount, offer.currency)} — {offer.left}", file=sys.stderr)
        print(f"  {offer.risk_note}", file=sys.stderr)
        if offer.same_card_warning:     # asked again once the card is read
            print(f"  Warning: {offer.same_card_warning}.", file=sys.stderr)
        if args.yes:
            return True
        if not sys.stdin.isatty():
            print("  not confirmed: pass --yes to confirm offline sales without a prompt", file=sys.stderr)
            return False
        return input("  Confirm offline sale? [y/N] ").strip().lower() in ("y", "yes")
    return confirm


def cmd_charge(args) -> int:
    if args.amount is None and not args.item:
        raise Fail("the following arguments are required: amount, or --item NAME (`kiosk items` lists the catalog)")
    try:
        kiosk = _open(args)
    except (StoreAlarm, OSError) as exc:
        line = _disk_line(args, exc)
        if line is None:
            raise
        raise Fail(f"{line} — no sale taken: nothing stored, nothing charged", EXIT_DISK) from None
    try:
        cart = _cart(kiosk.config, args.item or ())
        currency = args.currency or cart.currency or kiosk.config.currency
        if cart.currency and currency_code_or_fail(currency) != cart.currency:
            raise Fail(f"the items are priced in {cart.currency.upper()}, not {currency.upper()}")
        try:
            amount = parse_amount(args.amount, currency) if args.amount is not None else cart.total
            tip = quick_items.parse_tip(args.tip, amount, currency) if args.tip else 0
        except ValueError as exc:
            raise Fail(str(exc)) from None
        behavior = "force_offline" if args.offline else None
        try:
            result = kiosk.take_sale(amount, currency, behavior=behavior, confirm=_confirm_prompt(args),
                                     customer=args.customer, card=args.card, items=cart.items() or None,
                                     tip=tip, receipt_email=args.receipt_email)
        except ValueError as exc:
            raise Fail(str(exc)) from None
        if args.json:
            _print_json({"status": result.status, "message": result.message, "limit": result.limit,
                         "disk": result.disk, "payment": result.payment.public() if result.payment else None})
        else:
            what = f"{format_amount(amount + tip, currency)}"
            extras = [quick_items.describe(cart.items())] if len(cart) else []
            extras += [f"tip {format_amount(tip, currency)}"] if tip else []
            if extras:
                what += f" ({' + '.join(extras)})"
            if result.payment:
                what += f" {result.payment.card.brand} •••• {result.payment.card.last4} ({result.payment.id})"
            print(f"{result.status.upper().replace('_', ' ')}: {what} — {result.message}")
            if result.ok and result.payment and result.payment.receipt_email:
                print(f"receipt: Stripe e-mails it to {result.payment.receipt_email}"
                      + (" once the sale is forwarded" if result.payment.offline else ""))
        sys.stdout.flush()      # shown before close() records it as shown (a pipe holds it in a buffer)
        if result.disk:
            return EXIT_DISK
        return EXIT_OK if result.ok else EXIT_REFUSED
    finally:
        kiosk.close()


def _cart(config, specs) -> "quick_items.Cart":
    """``--item "NAME[*QTY]"``... as a cart of the catalog's items."""
    found = quick_items.catalog(config)
    cart = quick_items.Cart()
    for spec in specs:
        try:
            name, quantity = quick_items.parse_item(spec)
            item = quick_items.find(found, name)
            if item is None:
                raise ValueError(f"--item {name!r} is not in the catalog (`kiosk items` lists it; "
                                 "[[catalog.items]] in config.toml)")
            cart.add(item, quantity)
        except ValueError as exc:
            raise Fail(str(exc)) from None
    return cart


def currency_code_or_fail(currency: str) -> str:
    try:
        return currency_code(currency)
    except MoneyError as exc:
        raise Fail(str(exc)) from None


def cmd_items(args) -> int:
    """The quick items of ``[[catalog.items]]`` and the tips of ``[kiosk] tips``."""
    from .boot import load_config, load_host
    config = load_config(load_host(), Path(args.config))
    found = quick_items.catalog(config)
    tips = config["kiosk"]["tips"]
    if args.json:
        _print_json({"items": [{"name": item.name, "price": item.price, "currency": item.currency,
                                "formatted": format_amount(item.price, item.currency)} for item in found],
                     "tips": tips})
        return EXIT_OK
    for item in found:
        print(f"{item.name:<{quick_items.MAX_NAME}}  {format_amount(item.price, item.currency):>14}")
    if not found:
        print("no quick items ([[catalog.items]] in config.toml)")
    print(f"tips: {', '.join(f'{percent}%' for percent in tips) if tips else 'none asked'}")
    return EXIT_OK


def cmd_queue(args) -> int:
    from . import local_time
    asked_since = _since(args.since) if args.since else None
    limit = None if args.all else args.limit
    if limit is not None and limit < 0:
        raise Fail(f"--limit must be 0 or more, not {limit}")
    kiosk = _open(args)
    try:
        zone = kiosk.zone
        # a date or time without a zone is the kiosk's, as the vendor means it
        since = None if asked_since is None else iso(
            asked_since if asked_since.tzinfo else asked_since.replace(tzinfo=zone))
        # streamed: pending first (oldest first; bounded by max_pending), then
        # settled newest first, read a page at a time whatever history holds
        pending = [p for p in kiosk.store.live() if since is None or p.created_at >= since]
        settled = _settled_since(kiosk.store, limit, since)
        shown = 0
        if args.json:
            out = sys.stdout
            out.write("[")
            for p in itertools.chain(pending, settled):
                out.write(("\n" if shown == 0 else ",\n") + textwrap.indent(json.dumps(
                    {**p.public(), "local_time": local_time.local(p.created_at, zone)},
                    indent=2, ensure_ascii=False), "  "))
                shown += 1
            out.write("\n]\n")
            return EXIT_OK
        for p in itertools.chain(pending, settled):
            tail = p.payment_intent or (f"{p.decline_code or 'refused'}: {p.message}" if p.state == "failed" else
                                        p.message if p.state in ("moved", "voided") else "")
            if p.is_refund:         # money given back: shown as a refund of its sale
                tail = (f"refund of {p.refund_of}" + (f" {p.refund_id}" if p.refund_id else "")
                        + (f": {p.message}" if p.state == "failed" else ""))
            print(f"{local_time.shown_time(p.created_at, zone)}  {p.state:<10} "
                  f"{format_amount(-p.amount if p.is_refund else p.amount, p.currency):>14}  "
                  f"{p.card.brand} •••• {p.card.last4}  {'offline' if p.offline else 'online '}  {p.id}  {tail}")
            shown += 1
        if not shown:
            print("no payments")
        elif limit is not None and shown - len(pending) == limit:
            print(f"(the newest {limit} settled payments; --limit N or --all for more)")
        return EXIT_OK
    finally:
        kiosk.close()


def _settled_since(store, limit, since):
    """``store.settled(limit, since=)``; a store that takes no ``since`` is filtered here."""
    if since is None:
        return store.settled(limit)
    if "since" in inspect.signature(store.settled).parameters:
        return store.settled(limit, since=since)
    taken = (p for p in store.settled(None) if p.created_at >= since)
    return taken if limit is None else itertools.islice(taken, limit)


def _since(text: str) -> datetime:
    """``--since``: a date (midnight) or an ISO 8601 time; without a zone it is the kiosk's."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Fail(f"--since {text!r} is not a date (2026-12-05) or time (2026-12-05T09:00)") from None


def cmd_report(args) -> int:
    """The day's totals per currency, or with ``--csv`` one row per payment (kiosk/report.py)."""
    from . import local_time, report
    if args.with_contacts and not args.csv:
        raise Fail("--with-contacts goes with --csv (the totals name no customer)")
    asked = _report_day(args.date) if args.date else None
    kiosk = _open(args)
    try:
        zone = kiosk.zone
        day = asked or local_time.day_of(kiosk.clock(), zone)     # today as the kiosk's defended clock has it
        if args.csv:
            report.write_csv(sys.stdout, report.payments_of(kiosk.store, day, zone), zone, kiosk.config.kiosk_id,
                             with_contacts=args.with_contacts)
            return EXIT_OK
        found = kiosk.day_report(day)       # the same function the Today screen calls
        totals = found.pop("currencies")
        where = {**found, "kiosk_id": kiosk.config.kiosk_id}
        if args.json:
            _print_json({**where, "not_yet_taken": list(report.NOT_YET_TAKEN), "currencies": totals})
            return EXIT_OK
        print(f"{where['date']} ({where['timezone']}), kiosk {where['kiosk_id']}")
        for line in report.text_lines(totals) or ["no payments"]:
            print(line)
        return EXIT_OK
    finally:
        kiosk.close()


def _report_day(text: str):
    try:
        return datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        raise Fail(f"--date {text!r} is not a date like 2026-12-05") from None


def cmd_void(args) -> int:
    """Void a sale not sent yet; one already charged is refunded instead (kiosk/refunding.py)."""
    kiosk = _open(args)
    try:
        return _refund_result(args, kiosk.void(args.payment_id))
    finally:
        kiosk.close()


def cmd_refund(args) -> int:
    """Refund a charged sale, all that is left of it or AMOUNT (kiosk/refunding.py)."""
    kiosk = _open(args)
    try:
        amount = None
        if args.amount is not None:
            sale = kiosk.store.get(args.payment_id)
            try:
                # a refund has no minimum charge: Stripe gives back any amount, down to one minor unit
                amount = parse_amount(args.amount, sale.currency if sale else kiosk.config.currency, minimum=False)
            except MoneyError as exc:
                raise Fail(str(exc)) from None
        return _refund_result(args, kiosk.refund(args.payment_id, amount))
    finally:
        kiosk.close()


def _refund_result(args, result) -> int:
    if args.json:
        _print_json({"status": result.status, "reason": result.reason or None, "details": result.details,
                     "message": result.message, "payment": result.payment.public() if result.payment else None})
    else:
        print(f"{result.status.upper().replace('_', ' ')}: {result.message}")
    return EXIT_OK if result.ok else EXIT_REFUSED


def cmd_receipt(args) -> int:
    """Print a payment's receipt (again) on the receipt printer (kiosk/receipt_printing.py)."""
    kiosk = _open(args)
    try:
        why = kiosk.print_receipt(args.payment_id)
        if why is not None:
            raise Fail(why, EXIT_REFUSED)
        print(f"printed the receipt of {args.payment_id}")
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_sync(args) -> int:
    kiosk = _open(args)
    try:
        report = kiosk.forward(force=True)
        if args.json:
            _print_json(report.as_dict())
        elif not report.reached:
            why = kiosk.sync_problem() or "Stripe unreachable"
            print(f"{why}: nothing sent; {report.pending} pending", file=sys.stderr)
        else:
            print(f"succeeded {report.succeeded}, failed {report.failed}, pending {report.pending}")
            if report.auth_error:
                print(f"error: {report.auth_error}; forwarding stopped, payments kept", file=sys.stderr)
        if report.auth_error:          # no key, or a rejected one: the vendor must fix the key
            return EXIT_AUTH
        return EXIT_OK if report.reached else EXIT_OFFLINE
    finally:
        kiosk.close()


def cmd_status(args) -> int:
    kiosk = _open(args)
    try:
        status = kiosk.status()
        problem = kiosk.sync_problem()
        status["sync_problem"] = problem
        if args.json:
            _print_json(status)
            return EXIT_OK
        print(f"kiosk {status['kiosk_id']}: {'ONLINE' if status['online'] else 'OFFLINE'}"
              f"{' — ' + problem if problem else ''}")
        pending = status["pending"]
        totals = ", ".join(v["formatted"] for v in pending["by_currency"].values()) or "nothing"
        print(f"pending: {pending['count']} ({totals})")
        refunds = status.get("refunds_pending") or {"count": 0}
        if refunds["count"]:
            back = ", ".join(v["formatted"] for v in refunds["by_currency"].values())
            print(f"refunds waiting to be sent: {refunds['count']} ({back})")
        zone = kiosk.zone
        if status["oldest_pending_at"]:
            deadline = parse_iso(status["oldest_pending_at"]) + timedelta(hours=WINDOW_HOURS)
            print(f"oldest pending: taken {_shown_at(status['oldest_pending_at'], zone)}, "
                  f"{status['oldest_pending_age_hours']:.1f} h old — send it by {_shown_at(deadline, zone)} "
                  f"({status['window_hours_left']:.1f} h left of the 24 h window)")
        for code, lim in status["limits"].items():
            print(f"offline limits {code.upper()}: {format_amount(lim['per_transaction'], code)} per sale, "
                  f"{format_amount(lim['left'], code)} left of {format_amount(lim['total'], code)}, "
                  f"{lim['count']} payments")
        print(f"last sync: {_shown_at(status['last_sync_at'], zone)}")
        clock = status["clock"]
        print(f"clock: {'trusted' if clock['trusted'] else 'NOT TRUSTED — ' + clock['why']}"
              f" (counting from {_shown_at(clock['kiosk_time'], zone)})")
        reader = status["reader"]
        print(f"reader: {reader['name']}{'' if reader['supports_offline'] else ' (online only)'}")
        if status.get("sales_paused"):
            print(f"SALES PAUSED: {status['sales_paused']}")
        for key, value in status.items():      # what plugins add (kiosk_status): one line each
            if isinstance(value, dict) and isinstance(value.get("line"), str):
                print(f"{key}: {value['line']}")
        for line in status["plugin_trouble"].values():
            print(f"plugin skipped: {line}")
        for line in status["store_alarms"]:
            print(f"ALARM: {line}")
        disk = status["disk"]
        if disk is not None:
            print(f"disk: {disk['free_mb']:.1f} MB free of {disk['total_mb']:.1f} MB" + (
                f" — LOW: below [storage] min_free_mb = {disk['min_free_mb']:g}; free some space before "
                "sales cannot be stored" if disk["low"] else ""))
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_recover(args) -> int:
    """0: nothing was lost, or everything was salvaged; 1: some of it could
    not be read (each such line says "could not read: ...")."""
    from .interfaces import optional
    kiosk = _open(args)
    try:
        recover = optional(kiosk.store, "PaymentStore", "recover")
        if recover is None:
            raise Fail(f"the storage plugin {kiosk.config['storage']['use']} cannot recover damage itself")
        lines = recover()
        for line in lines:
            print(line)
        lost = [line for line in lines if "could not read: " in line and "could not read: nothing" not in line]
        return EXIT_REFUSED if lost else EXIT_OK
    finally:
        kiosk.close()


def cmd_check(args) -> int:
    """Ready to sell offline?  0 ready, 1 not ready; every reason one line."""
    from . import readiness
    from .interfaces import Readiness
    try:
        kiosk = _open(args)
    except (StoreAlarm, StoreBusy, OSError) as exc:
        full = None if isinstance(exc, StoreBusy) else _disk_line(args, exc)
        if isinstance(exc, OSError) and full is None:
            raise
        advice = ("the running kiosk holds it: its Sync page shows whether it is ready" if isinstance(exc, StoreBusy)
                  else "nothing can be stored until there is room" if full
                  else "the queue must be looked at before selling (see docs)")
        lines = [Readiness("queue", False, full or str(exc), advice), *_processor_lines(args)]
    else:
        try:
            lines = kiosk.readiness()
        finally:
            kiosk.close()
    ready = readiness.ready(lines)
    if args.json:
        _print_json({"ready": ready, "checks": [{"name": line.name, "ok": line.ok, "detail": line.detail,
                                                 "advice": line.advice} for line in lines]})
    else:
        for line in lines:
            advice = f" — {line.advice}" if line.advice else ""
            print(f"{'ok ' if line.ok else 'NOT'}  {line.name}: {line.detail}{advice}")
        print("Ready to sell offline." if ready else
              f"Not ready to sell offline: {sum(not line.ok for line in lines)} problem(s) above.")
    return EXIT_OK if ready else EXIT_REFUSED


def _processor_lines(args) -> list:
    """Stripe's lines when the queue cannot be opened: the rest needs the kiosk."""
    from . import readiness
    from .boot import load_config, load_host, open_sync
    host = load_host()
    sync = open_sync(host, load_config(host, Path(args.config)))
    try:
        return readiness.processor(sync)
    finally:
        sync.close()


def cmd_plugins(args) -> int:
    from .boot import load_host
    host = load_host()
    infos = [info.as_dict() for info in host.plugins()]
    if args.json:
        _print_json(infos)
        return EXIT_OK
    for info in infos:
        print(f"{info['name']} {info['version']}  [{', '.join(info['kind']) or 'extra'}]  "
              f"{', '.join(info['hooks'])}")
    for name, error in host.failed.items():
        print(f"{name}  FAILED TO LOAD: {error}")
    return EXIT_OK


def cmd_notices(args) -> int:
    kiosk = _open(args)
    try:
        feed = kiosk.store.notices(args.limit)
        if args.json:
            _print_json(feed)
        zone = kiosk.zone
        for notice in ([] if args.json else feed):
            at = _shown_at(notice.get("at"), zone)
            print(f"{at}  {notice['level']:<7} {notice['title']}: {notice['message']}")
        return EXIT_OK
    finally:
        kiosk.close()


def _shown_at(stored, zone) -> str:
    """A stored time in the kiosk's zone, or as it is when it does not read as one (an old feed's)."""
    from .local_time import shown_time
    try:
        return shown_time(stored, zone) or "never"
    except (TypeError, ValueError):
        return str(stored)


def _passphrase(args, twice: bool) -> str:
    """From ``--passphrase-file`` (first line; not readable by others), ``$KIOSK_PASSPHRASE``,
    or asked on the terminal (twice to export); never from the command line."""
    import getpass
    import stat
    from .export_file import MIN_PASSPHRASE
    if args.passphrase_file:
        try:
            mode = os.stat(args.passphrase_file).st_mode
            text = Path(args.passphrase_file).read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            raise Fail(f"cannot read passphrase file {args.passphrase_file}: {getattr(exc, 'strerror', None) or exc}")
        if stat.S_ISREG(mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise Fail(f"passphrase file {args.passphrase_file} is readable by others: chmod 600 {args.passphrase_file}")
        passphrase = text.splitlines()[0] if text else ""
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        passphrase = getpass.getpass("Passphrase for the export file: ")
        if twice and getpass.getpass("The same passphrase again: ") != passphrase:
            raise Fail("the two passphrases differ; nothing written")
    else:
        raise Fail(f"no passphrase: give --passphrase-file FILE or set {PASSPHRASE_ENV} (never on the command line)")
    if not passphrase:
        raise Fail("the passphrase is empty")
    if twice and len(passphrase) < MIN_PASSPHRASE:
        raise Fail(f"the passphrase is too short: at least {MIN_PASSPHRASE} characters")
    return passphrase


def _totals(payments) -> str:
    by_currency: dict[str, int] = {}
    for p in payments:
        by_currency[p.currency] = by_currency.get(p.currency, 0) + p.amount
    return ", ".join(format_amount(amount, code) for code, amount in sorted(by_currency.items())) or "nothing"


def cmd_export(args) -> int:
    from . import moving
    from .export_file import ExportFileError
    path = Path(args.file)
    kiosk = _open(args)
    try:
        if not args.dry_run and not args.all and not kiosk.store.live():
            print("nothing to export: no pending payments (--all copies the settled ones too)")
            return EXIT_OK
        passphrase = None if args.dry_run else _passphrase(args, True)
        try:
            done = moving.export_payments(kiosk, path, passphrase, include_settled=args.all, dry_run=args.dry_run)
        except (ExportFileError, moving.MoveNotRecorded) as exc:
            raise Fail(str(exc), EXIT_EXPORT_FILE) from None
        if args.json:
            _print_json({"file": str(path), "dry_run": args.dry_run, "moved": [p.public() for p in done.pending],
                         "settled_copied": done.settled})
            return EXIT_OK
        if args.dry_run:
            for p in done.pending:
                print(f"{_shown_at(p.created_at, kiosk.zone)}  {p.state:<10} "
                      f"{format_amount(p.amount, p.currency):>14}  "
                      f"{p.card.brand} •••• {p.card.last4}  {p.id}")
        verb = ("would move", "would copy") if args.dry_run else ("moved", "copied")
        copied = f" and {verb[1]} {done.settled} settled" if args.all else ""
        print(f"{verb[0]} {len(done.pending)} pending payment(s) ({_totals(done.pending)}){copied} to {path}"
              + ("; nothing written" if args.dry_run else
                 f": this kiosk no longer forwards them. On the other kiosk: kiosk import {path}"))
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_import(args) -> int:
    from . import moving
    from .export_file import ExportFileError
    passphrase = _passphrase(args, False)
    kiosk = _open(args)
    try:
        try:
            done = moving.import_payments(kiosk, Path(args.file), passphrase)
        except ExportFileError as exc:
            raise Fail(str(exc), EXIT_EXPORT_FILE) from None
        if args.json:
            _print_json({"file": args.file, "source_kiosk": done.source, "exported_at": done.exported_at,
                         "added": [p.public() for p in done.added], "settled_added": done.settled_added,
                         "already_here": done.known})
            return EXIT_OK
        known = ", ".join(f"{n} {state}" for state, n in sorted(done.known.items()))
        print(f"imported {len(done.added)} pending payment(s) ({_totals(done.added)}) and {done.settled_added} "
              f"settled from {args.file} (exported by kiosk {done.source} at {_shown_at(done.exported_at, kiosk.zone)})"
              f"{'; already here: ' + known if known else ''}")
        for code in sorted({p.currency for p in done.added}):
            limits = kiosk.effective_limits(code)
            if limits is None:
                print(f"no offline limit for {code.upper()} here: its imported payments are forwarded all the same")
                continue
            print(f"offline limit {code.upper()}: {format_amount(kiosk.stored(code).amount, code)} waiting of "
                  f"{format_amount(limits.total, code)} — an import is never refused by the limits, but counts "
                  f"towards them: new offline sales may be refused until these are forwarded")
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_run(args) -> int:
    from . import appliance, local_socket
    from .boot import open_kiosk
    from .safe_mode import Startup
    startup = Startup(Path(args.config))
    safe = ("Asked for with --safe" if args.safe else
            "The last start did not complete" if startup.last_failed() else False)
    try:
        startup.begin()
        kiosk = open_kiosk(Path(args.config), safe_mode=safe)
    except BaseException:
        startup.complete()      # a start that failed and said why (exit 2, 5, 7) is no crash: no safe mode for it
        raise
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        kiosk.wake.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        display_name = None if args.headless else (kiosk.config["display"]["use"] or None)
        with local_socket.serving(kiosk, stop):
            appliance.run(kiosk, stop, display_name=display_name, on_started=startup.complete)
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_demo(args) -> int:
    from .demo import run_demo
    return run_demo(Path(args.config), keep=args.keep, screen=not args.no_screen)


def plugin_command(command):
    """A plugin's ``kiosk`` command, with the core's error rules."""
    from .commands import CommandError

    def run(args) -> int:
        try:
            return int(command.run(args) or 0)
        except CommandError as exc:
            raise Fail(str(exc), exc.exit_code) from None
    return run


def plugin_commands() -> list:
    """Every command the loaded plugins add (``kiosk_commands``)."""
    from .boot import load_host
    host = load_host()
    found, owners = [], {}
    # built-ins first: a third-party plugin taking a built-in's name is the one refused
    for plugin_name, result in sorted(host.answers("kiosk_commands"), key=lambda answer: answer[0] not in host.builtins):
        for command in result or ():
            if command.name in CORE_COMMANDS or command.name in owners:
                raise PluginError(f"plugin {plugin_name}: command {command.name!r} is already taken "
                                  f"(by {owners.get(command.name, 'the core')})")
            owners[command.name] = plugin_name
            found.append(command)
    return found


# -- parser ---------------------------------------------------------------------

class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line (and exit 2), like every other error here;
    ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(extra_commands=()) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None,
                        help="configuration file (default: $KIOSK_CONFIG, else ./config.toml)")
    parser = OneLineParser(prog="kiosk", description="Offline card-payments kiosk")
    parser.add_argument("--version", action="version", version=f"kiosk {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, func, help, json_flag=True):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    add("init", cmd_init, "create the data directory and the key (safe to run twice)", json_flag=False)
    p = add("charge", cmd_charge, "take one sale through the configured reader")
    p.add_argument("amount", nargs="?", help="amount in the currency's units, e.g. 12.50 (JPY: 1200), before "
                   "the tip; left out with --item: the items' total")
    p.add_argument("--currency", help="ISO currency code (default: [kiosk] currency)")
    p.add_argument("--card", help="test card for the simulated reader (visa, insufficient_funds, ...)")
    p.add_argument("--offline", action="store_true", help="store the sale offline even if Stripe is reachable")
    p.add_argument("--yes", action="store_true", help="confirm an offline sale without a prompt")
    p.add_argument("--customer", help="customer e-mail or phone, for following up a decline")
    p.add_argument("--item", action="append", metavar="NAME[*QTY]",
                   help="a quick item from the catalog, e.g. --item Coffee*2 (repeat for more)")
    p.add_argument("--tip", metavar="PERCENT%|AMOUNT", help="a tip on top: 15%% of the amount, or 1.50")
    p.add_argument("--receipt-email", metavar="ADDR", help="Stripe e-mails its receipt here once the payment "
                   "succeeds (an offline sale: once forwarded)")
    add("items", cmd_items, "the quick items of [[catalog.items]] and the tips of [kiosk] tips")
    p = add("queue", cmd_queue, "pending payments and the newest settled ones")
    p.add_argument("--limit", type=int, default=50, help="settled payments to list, newest first (default 50)")
    p.add_argument("--since", help="only payments taken since this date or time (in [kiosk] timezone, or ISO 8601 with a zone)")
    p.add_argument("--all", action="store_true", help="every settled payment (streamed)")
    p = add("report", cmd_report, "the day's totals per currency, or its payments as CSV for the books",
            json_flag=False)
    p.add_argument("--date", help="the day, YYYY-MM-DD, in [kiosk] timezone (default: today)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable totals")
    form.add_argument("--csv", action="store_true", help="one row per payment, newest first")
    p.add_argument("--with-contacts", action="store_true", help="add the customer's contact to each CSV row")
    p = add("void", cmd_void, "void a sale not sent yet (one already charged is refunded instead)")
    p.add_argument("payment_id", metavar="PAYMENT_ID", help="the sale's id (kp_..., from `kiosk queue`)")
    p = add("refund", cmd_refund, "refund a charged sale, whole or part (kept and sent later when offline)")
    p.add_argument("payment_id", metavar="PAYMENT_ID", help="the sale's id (kp_..., from `kiosk queue`)")
    p.add_argument("amount", nargs="?", metavar="AMOUNT",
                   help="how much to give back, e.g. 2.50 (default: all that is left to refund)")
    p = add("receipt", cmd_receipt, "print a payment's receipt (again) on the receipt printer", json_flag=False)
    p.add_argument("payment_id", metavar="PAYMENT_ID", help="the payment's id (kp_..., from `kiosk queue`)")
    add("sync", cmd_sync, "forward pending payments to Stripe now")
    add("status", cmd_status, "online or offline, what is waiting, limits in force")
    add("check", cmd_check, "ready to sell offline? the Stripe key, API version, clock, reader and queue")
    add("plugins", cmd_plugins, "list loaded plugins")
    add("recover", cmd_recover, "after a store alarm: salvage what still reads, say exactly what could not "
        "be read, clear the alarm", json_flag=False)
    p = add("notices", cmd_notices, "the notice feed, newest last")
    p.add_argument("--limit", type=int, default=50)
    p = add("export", cmd_export, "move pending payments into an encrypted file, for another kiosk or a new card")
    p.add_argument("file", help="the export file to write (never overwritten)")
    p.add_argument("--all", action="store_true", help="copy the settled payments too (they stay here as well)")
    p.add_argument("--dry-run", action="store_true", help="list what would move; write nothing")
    p.add_argument("--passphrase-file", help=f"read the passphrase from this file's first line (else ${PASSPHRASE_ENV}, "
                                             "else asked twice)")
    p = add("import", cmd_import, "add the payments of an export file that this kiosk does not hold yet")
    p.add_argument("file", help="an export file written by `kiosk export`")
    p.add_argument("--passphrase-file", help=f"read the passphrase from this file's first line (else ${PASSPHRASE_ENV}, "
                                             "else asked)")
    p = add("run", cmd_run, "the appliance loop: forward in the background, remind, show the screen", json_flag=False)
    p.add_argument("--headless", action="store_true", help="no display plugin")
    p.add_argument("--safe", action="store_true",
                   help="safe mode: built-in plugins only (also chosen when the last start did not complete)")
    p = add("demo", cmd_demo, "walk through online, offline and forwarded sales against a local Stripe peer",
            json_flag=False)
    p.add_argument("--keep", action="store_true", help="keep the demo's data directory")
    p.add_argument("--no-screen", action="store_true", help="do not open the touchscreen at the end")
    for command in extra_commands:
        p = add(command.name, plugin_command(command), command.help, json_flag=False)
        if command.arguments is not None:
            command.arguments(p)
    return parser


CORE_COMMANDS = ("init", "charge", "queue", "sync", "status", "check", "plugins", "notices", "run", "demo",
                 "recover", "export", "import", "report", "items", "void", "refund",
                 "receipt")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # before argparse, whose errors repeat a bad value: a card number is never printed back
        for value in argv:
            if os.sep not in value:          # a file's path is not free text (temp folders hold digits)
                refuse_card_number(value, "a command-line value")
    except ValueError as exc:
        print(f"kiosk: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = next((a for a in argv if not a.startswith("-")), None)
    extra = []
    if command not in CORE_COMMANDS:      # a plugin's command, --help, or a typo: ask the plugins
        try:
            extra = plugin_commands()
        except (ConfigError, PluginError) as exc:
            print(f"kiosk: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser(extra)
    args = parser.parse_args(argv)
    args.config_given = args.config is not None
    args.argv = argv
    if args.config is None:
        args.config = str(default_path())
    quiet = args.command != "run"   # notices go to the feed; the log is for the appliance
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("stripe", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return run_command(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kiosk queue --all | head`: the reader has what it wanted; nothing failed here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def run_command(args) -> int:
    """``args.func(args)`` under the error rules above: one line on stderr and
    the exit code.  ``kiosk run`` runs the commands it serves through it too."""
    try:
        return args.func(args)
    except Fail as exc:
        print(f"kiosk: error: {exc}", file=sys.stderr)
        return exc.code
    except (ConfigError, PluginError) as exc:
        print(f"kiosk: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ReaderError as exc:
        print(f"kiosk: error: reader: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreAlarm, StoreBusy) as exc:
        line = _disk_line(args, exc) if isinstance(exc, StoreAlarm) else None
        if line is not None:          # a full card is no damage: what is stored is intact
            print(f"kiosk: {line}", file=sys.stderr)
            return EXIT_DISK
        if isinstance(exc, StoreBusy) and getattr(args, "running", None) is None:
            code = _ask_running_kiosk(args)
            if code is not None:
                return code
        print(f"kiosk: alarm: {exc}", file=sys.stderr)
        return EXIT_STORE
    except OSError as exc:
        line = _disk_line(args, exc)
        if line is None:
            raise
        print(f"kiosk: {line}", file=sys.stderr)
        return EXIT_DISK


def _disk_line(args, exc: BaseException) -> str | None:
    """One line when ``exc`` is the data partition refusing a write (see
    :mod:`kiosk.disk_space`), None for anything else."""
    from . import disk_space
    from .boot import load_config, load_host
    try:
        data_dir = load_config(load_host(), Path(args.config)).data_dir
    except Exception:          # the line can do without the path
        data_dir = None
    trouble = disk_space.disk_trouble(exc, data_dir)
    return None if trouble is None else disk_space.describe(trouble, data_dir)


def _ask_running_kiosk(args) -> int | None:
    """The queue is held: if ``kiosk run`` holds it and the command is one it
    serves, it runs it (same output, same exit code); ``None`` otherwise."""
    from . import local_socket
    from .boot import load_config, load_host
    if args.command not in local_socket.COMMANDS:
        return None
    data_dir = load_config(load_host(), Path(args.config)).data_dir
    return local_socket.ask(data_dir, args.argv, args.command)


if __name__ == "__main__":
    sys.exit(main())
