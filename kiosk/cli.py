"""The ``kiosk`` command.  Its options, output and exit codes are a contract
for scripts and tests:

    0  done (a sale approved online or stored offline; Stripe reached;
       ``kiosk check``: ready to sell offline)
    1  a sale declined, refused or not confirmed; ``kiosk check``: not ready
    2  usage, configuration or plugin error
    3  Stripe unreachable (``kiosk sync``; nothing changed)
    4  Stripe rejected the API key (``kiosk sync``; nothing lost)
    5  the queue on disk cannot be trusted, or another kiosk process holds it

Errors are one line on stderr.  Never prints a card number, token or API key.
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
from datetime import datetime
from pathlib import Path

from .config import ConfigError, default_path
from .host import PluginError, package_version
from .interfaces import ReaderError, StoreAlarm, StoreBusy
from .money import MoneyError, format_amount, parse_amount
from .payment import iso

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_OFFLINE, EXIT_AUTH, EXIT_STORE = 0, 1, 2, 3, 4, 5


class Fail(Exception):
    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _open(args, create: bool = False):
    from .boot import open_kiosk
    return open_kiosk(Path(args.config), create=create)


def _print_json(value) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


# -- commands -------------------------------------------------------------------

def cmd_init(args) -> int:
    from .boot import load_config, load_host
    host = load_host()
    config = load_config(host, Path(args.config))
    key_existed = (config.data_dir / "kiosk.key").exists()
    kiosk = _open(args, create=True)
    try:
        print(f"data directory: {config.data_dir}")
        print("key: kept the existing one" if key_existed else "key: created (mode 0600)")
    finally:
        kiosk.close()
    return EXIT_OK


def _confirm_prompt(args):
    def confirm(offer) -> bool:
        print(f"Stripe cannot be reached. Store this sale offline? "
              f"{format_amount(offer.amount, offer.currency)} — {offer.left}", file=sys.stderr)
        print(f"  {offer.risk_note}", file=sys.stderr)
        if args.yes:
            return True
        if not sys.stdin.isatty():
            print("  not confirmed: pass --yes to confirm offline sales without a prompt", file=sys.stderr)
            return False
        return input("  Confirm offline sale? [y/N] ").strip().lower() in ("y", "yes")
    return confirm


def cmd_charge(args) -> int:
    kiosk = _open(args)
    try:
        currency = args.currency or kiosk.config.currency
        try:
            amount = parse_amount(args.amount, currency)
        except MoneyError as exc:
            raise Fail(str(exc)) from None
        behavior = "force_offline" if args.offline else None
        try:
            result = kiosk.take_sale(amount, currency, behavior=behavior, confirm=_confirm_prompt(args),
                                     customer=args.customer, card=args.card)
        except ValueError as exc:
            raise Fail(str(exc)) from None
        if args.json:
            _print_json({"status": result.status, "message": result.message, "limit": result.limit,
                         "payment": result.payment.public() if result.payment else None})
        else:
            what = f"{format_amount(amount, currency)}"
            if result.payment:
                what += f" {result.payment.card.brand} •••• {result.payment.card.last4} ({result.payment.id})"
            print(f"{result.status.upper().replace('_', ' ')}: {what} — {result.message}")
        return EXIT_OK if result.ok else EXIT_REFUSED
    finally:
        kiosk.close()


def cmd_queue(args) -> int:
    since = _since(args.since) if args.since else None
    limit = None if args.all else args.limit
    if limit is not None and limit < 0:
        raise Fail(f"--limit must be 0 or more, not {limit}")
    kiosk = _open(args)
    try:
        # streamed: pending first (oldest first; bounded by max_pending), then
        # settled newest first, read a page at a time whatever history holds
        pending = [p for p in kiosk.store.live() if since is None or p.created_at >= since]
        settled = _settled_since(kiosk.store, limit, since)
        shown = 0
        if args.json:
            out = sys.stdout
            out.write("[")
            for p in itertools.chain(pending, settled):
                out.write(("\n" if shown == 0 else ",\n") + textwrap.indent(
                    json.dumps(p.public(), indent=2, ensure_ascii=False), "  "))
                shown += 1
            out.write("\n]\n")
            return EXIT_OK
        for p in itertools.chain(pending, settled):
            tail = p.payment_intent or (f"{p.decline_code or 'refused'}: {p.message}" if p.state == "failed" else "")
            print(f"{p.created_at}  {p.state:<10} {format_amount(p.amount, p.currency):>14}  "
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


def _since(text: str) -> str:
    """``--since``: a date (the vendor's local midnight) or an ISO 8601 time, as the stored UTC form."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Fail(f"--since {text!r} is not a date (2026-12-05) or time (2026-12-05T09:00)") from None
    if moment.tzinfo is None:
        moment = moment.astimezone()          # the kiosk's own time zone, as the vendor means it
    return iso(moment)


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
        if not report.reached:
            return EXIT_OFFLINE
        return EXIT_AUTH if report.auth_error else EXIT_OK
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
        if status["oldest_pending_at"]:
            print(f"oldest pending: {status['oldest_pending_age_hours']:.1f} h old, "
                  f"{status['window_hours_left']:.1f} h left of the 24 h window")
        for code, lim in status["limits"].items():
            print(f"offline limits {code.upper()}: {format_amount(lim['per_transaction'], code)} per sale, "
                  f"{format_amount(lim['left'], code)} left of {format_amount(lim['total'], code)}, "
                  f"{lim['count']} payments")
        print(f"last sync: {status['last_sync_at'] or 'never'}")
        reader = status["reader"]
        print(f"reader: {reader['name']}{'' if reader['supports_offline'] else ' (online only)'}")
        for line in status["plugin_trouble"].values():
            print(f"plugin skipped: {line}")
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_check(args) -> int:
    """Ready to sell offline?  0 ready, 1 not ready; every reason one line."""
    from . import readiness
    from .interfaces import Readiness
    try:
        kiosk = _open(args)
    except (StoreAlarm, StoreBusy) as exc:
        advice = ("the running kiosk holds it: its Sync page shows whether it is ready" if isinstance(exc, StoreBusy)
                  else "the queue must be looked at before selling (see docs)")
        lines = [Readiness("queue", False, str(exc), advice), *_processor_lines(args)]
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
        for notice in ([] if args.json else feed):
            print(f"{notice['at']}  {notice['level']:<7} {notice['title']}: {notice['message']}")
        return EXIT_OK
    finally:
        kiosk.close()


def cmd_run(args) -> int:
    from . import appliance
    from .boot import open_kiosk
    from .safe_mode import Startup
    startup = Startup(Path(args.config))
    safe = ("Asked for with --safe" if args.safe else
            "The last start did not complete" if startup.last_failed() else False)
    startup.begin()
    try:
        kiosk = open_kiosk(Path(args.config), safe_mode=safe)
    except BaseException:
        startup.complete()      # a start that failed and said why (exit 2, 5) is no crash: no safe mode for it
        raise
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
        kiosk.wake.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        display_name = None if args.headless else (kiosk.config["display"]["use"] or None)
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
    p.add_argument("amount", help="amount in the currency's units, e.g. 12.50 (JPY: 1200)")
    p.add_argument("--currency", help="ISO currency code (default: [kiosk] currency)")
    p.add_argument("--card", help="test card for the simulated reader (visa, insufficient_funds, ...)")
    p.add_argument("--offline", action="store_true", help="store the sale offline even if Stripe is reachable")
    p.add_argument("--yes", action="store_true", help="confirm an offline sale without a prompt")
    p.add_argument("--customer", help="customer e-mail or phone, for following up a decline")
    p = add("queue", cmd_queue, "pending payments and the newest settled ones")
    p.add_argument("--limit", type=int, default=50, help="settled payments to list, newest first (default 50)")
    p.add_argument("--since", help="only payments taken since this date or time (local, or ISO 8601 with zone)")
    p.add_argument("--all", action="store_true", help="every settled payment (streamed)")
    add("sync", cmd_sync, "forward pending payments to Stripe now")
    add("status", cmd_status, "online or offline, what is waiting, limits in force")
    add("check", cmd_check, "ready to sell offline? the Stripe key, API version, clock, reader and queue")
    add("plugins", cmd_plugins, "list loaded plugins")
    p = add("notices", cmd_notices, "the notice feed, newest last")
    p.add_argument("--limit", type=int, default=50)
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


CORE_COMMANDS = ("init", "charge", "queue", "sync", "status", "check", "plugins", "notices", "run", "demo")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    if args.config is None:
        args.config = str(default_path())
    quiet = args.command != "run"   # notices go to the feed; the log is for the appliance
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("stripe", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
        print(f"kiosk: alarm: {exc}", file=sys.stderr)
        return EXIT_STORE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `kiosk queue --all | head`: the reader has what it wanted; nothing failed here
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
