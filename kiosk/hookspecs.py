"""The whole plugin contract of the kiosk, in one file.

A plugin is any object or module with functions marked ``@hookimpl`` (``from
kiosk import hookimpl``) whose names are hooks below; it is found through the
``kiosk`` entry-point group.  The built-in plugins in ``plugins/`` are
registered first, from ``kiosk.defaults.DEFAULT_PLUGINS``, and use nothing a
third-party plugin cannot: everything a plugin may import is in ``kiosk``.  A plugin's *kind* follows from the hooks
it implements: ``kiosk_open_reader`` makes it a reader, ``kiosk_open_storage`` a
storage, ``kiosk_open_sync`` a sync, ``kiosk_notify`` a notifier,
``kiosk_open_display`` a display, ``kiosk_offline_limits`` a limits policy and
``kiosk_print_receipt`` a receipt printer.  ``config.toml`` names which plugin serves each
kind (``[reader] use = "simulated"``); the ``kiosk_open_*`` hooks are called on
that plugin alone.

Rules every implementation can rely on:

- an implementation may accept fewer arguments than the spec names, so a new
  argument never breaks an old plugin;
- every payment state change is already durable on disk when a hook hears of it;
- notifier and display hooks run isolated: an exception is told in one line
  with the plugin's name (the traceback goes to the debug log), shown on the
  screen, and the sale goes on; a notifier or display that fails to load is
  skipped the same way.  Only a broken reader, storage or sync plugin stops
  the kiosk;
- nothing passed to a hook carries a card number, CVV or track data, and the
  Stripe key never is.

The interfaces the ``kiosk_open_*`` hooks return are described in
:mod:`kiosk` (the one import surface); ``docs/plugins.md`` has a section per hook.
"""
from __future__ import annotations

import pluggy

PROJECT = "kiosk"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- every kind ----------------------------------------------------------------

@hookspec
def kiosk_settings():
    """Declare the ``config.toml`` settings this plugin reads.

    Called once at start, on every loaded plugin, before the configuration is
    checked.  Return ``{section: {key: kiosk.Setting}}`` (sections may be
    dotted, e.g. ``"reader.simulated"``), or ``None``.  Keys nobody declares are
    refused with a one-line error naming them.  All results are merged.
    """


@hookspec
def kiosk_startup(kiosk):
    """The kiosk is ready: plugins are open and the queue is loaded.

    :param kiosk: the :class:`kiosk.KioskView` -- the running kiosk as a
        plugin sees it (``config``, ``online``, ``take_sale()``, ``live()``,
        ``needs_attention()``, ``request_sync()``...; every member is listed
        in ``docs/plugins.md``).
    Called once, on every plugin, before the first sale.  Return value ignored.
    Isolated: an exception is logged and start-up goes on.
    """


@hookspec
def kiosk_shutdown(kiosk):
    """The kiosk is stopping; release hardware and threads.

    Called once on every plugin, after the last sale and the last forward.
    Return value ignored.  Isolated.
    """


# -- reader --------------------------------------------------------------------

@hookspec(firstresult=True)
def kiosk_open_reader(settings, report):
    """Open the card reader this plugin provides.

    :param settings: the plugin's own sections of ``config.toml``, checked and
        with defaults filled in, as ``{section: {key: value}}``.
    :param report: ``report(notice)`` tells the vendor about the reader
        itself -- connected, lost, battery low -- as a :class:`kiosk.Notice`
        of kind ``notices.READER``, through every notifier and the screen.
        Callable from any thread, at any time while the reader is open;
        notices sent before the kiosk is up are held until it is.
    :returns: an object with the :class:`kiosk.Reader` interface.
    Called once at start, only on the plugin named by ``[reader] use``.
    Stops at first non-None result.
    """


# -- storage -------------------------------------------------------------------

@hookspec(firstresult=True)
def kiosk_open_storage(settings, data_dir, create):
    """Open the payment queue.

    :param settings: the plugin's sections of ``config.toml`` (checked).
    :param data_dir: :class:`pathlib.Path` of the data directory (``[storage] path``).
    :param create: ``True`` only from ``kiosk init``: create what is missing
        (the key, empty files, mode 0600) and never overwrite anything.
        Otherwise a missing, empty, truncated or unauthenticated file must
        raise :class:`kiosk.StoreAlarm` -- never read as empty.
    :returns: an object with the :class:`kiosk.PaymentStore` interface.
    Called once at start, only on the plugin named by ``[storage] use``.
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def kiosk_storage_files(settings):
    """Name the files in the data directory that hold payments.

    :param settings: the plugin's sections of ``config.toml`` (checked).
    :returns: the file names, relative to the data directory, that together
        hold everything needed to open the queue again -- the payments, the
        notices, the key -- and nothing else (no lock files, no secrets of
        other plugins), e.g. ``["kiosk.key", "live.kdb"]``.  A name may be
        absent on disk (a journal that exists only after a power cut, a file
        an earlier release wrote); tools copy the ones that are there.
    Called by tools that must keep the queue through something drastic --
    ``image/flash`` reflashing a card keeps these files -- only on the plugin
    named by ``[storage] use``.  Stops at first non-None result.
    """


# -- sync ----------------------------------------------------------------------

@hookspec(firstresult=True)
def kiosk_open_sync(settings, kiosk_id):
    """Open the connection that forwards payments to the processor.

    :param settings: the plugin's sections of ``config.toml`` (checked).
    :param kiosk_id: ``[kiosk] id``, to tag forwarded payments.
    :returns: an object with the :class:`kiosk.Forwarder` interface.
    Called once at start, only on the plugin named by ``[sync] use``.
    Stops at first non-None result.
    """


# -- notifier ------------------------------------------------------------------

@hookspec
def kiosk_notify(notice):
    """Tell the vendor something: a payment forwarded or declined, a reminder,
    a limit reached, the Stripe key rejected, the kiosk going offline.

    :param notice: a :class:`kiosk.Notice` (``kind``, ``title``,
        ``message``, ``level``, ``payment`` summary or ``None``, ``at``).
    Called on every plugin named in ``[notifier] use``, after the change the
    notice reports is durable, on the thread that made the change -- the
    sale's, or one of several forwarding threads at once: return quickly and
    hand slow work (network, sound) to a thread of your own.  Return value
    ignored.  Isolated: a notifier that raises is logged by name and never
    stops or loses a sale.
    """


# -- display -------------------------------------------------------------------

@hookspec(firstresult=True)
def kiosk_open_display(kiosk, settings):
    """Open the vendor's screen.

    :param kiosk: the :class:`kiosk.KioskView`.
    :param settings: the plugin's sections of ``config.toml`` (checked).
    :returns: an object with the :class:`kiosk.Display` interface;
        ``kiosk run`` calls its ``run(stop)`` on the main thread.
    Called once by ``kiosk run`` (not ``--headless``), only on the plugin named
    by ``[display] use``.  If it raises, or ``run`` raises, the kiosk logs it
    and carries on headless: forwarding never stops for a screen.
    Stops at first non-None result.
    """


# -- every payment change ------------------------------------------------------

@hookspec
def kiosk_payment_changed(payment, previous_state):
    """A payment was stored or changed state.

    :param payment: a copy of the :class:`kiosk.Payment` as now stored.
    :param previous_state: its state before, or ``None`` when just stored.
    Called on every plugin after the change is durable, on the thread that
    made it (as ``kiosk_notify``: return quickly).  Return value ignored.
    Isolated: an exception is logged by plugin name.
    """


@hookspec
def kiosk_status(kiosk):
    """Add this plugin's part to ``kiosk status`` (a battery, a printer...).

    :param kiosk: the :class:`kiosk.KioskView`.
    :returns: ``{key: value}`` (JSON types), or ``None``.  Each key is added to
        ``kiosk status --json``; a key the core or an earlier plugin already
        has is left out (logged).  A value that is a dict with a ``"line"``
        is printed by ``kiosk status`` as ``key: line``.
    Called on every plugin each time the status is asked for (``kiosk status``,
    screens): answer from what you already know -- no hardware waits, no
    network.  Isolated.
    """


@hookspec
def kiosk_sync_progress(done, total):
    """Forwarding is under way: ``done`` of ``total`` payments have an answer.

    Called on every plugin with ``(0, total)`` when a forwarding pass starts,
    after each payment, and once more when the pass ends (``done == total``;
    ``(0, 0)`` when there was nothing to send).  For progress bars and
    "sending" lights.  Return value ignored.  Isolated.
    """


# -- offline-limits policy -----------------------------------------------------

@hookspec(firstresult=True)
def kiosk_offline_limits(base, history):
    """Work out the offline limits in force now.

    :param base: :class:`kiosk.Limits` configured for the currency
        (per-transaction amount, total stored amount, number of pending payments).
    :param history: :class:`kiosk.History` -- offline payments forwarded
        and declined so far, hours since the last successful sync, age of the
        oldest pending payment.
    :returns: the effective :class:`kiosk.Limits`, or ``None`` to leave
        the decision to the next implementation.
    Called before every offline sale and by ``kiosk status``.  The built-in
    ``standard_limits`` plugin answers last (``trylast``); mark yours
    ``tryfirst`` to put your own risk rules in front.
    Stops at first non-None result.
    """


# -- the kiosk command ---------------------------------------------------------

@hookspec
def kiosk_commands():
    """Add commands to the ``kiosk`` CLI (as datasette's ``register_commands``).

    :returns: a list of :class:`kiosk.Command` (``name``, ``help``,
        ``run(args) -> int``, ``arguments(parser)``), or ``None``.
    Called on every plugin when ``kiosk`` is run with a command the core does
    not have, or ``--help``.  A name the core or another plugin already has
    is refused with a one-line error.  All results are merged.
    """


# -- receipts ------------------------------------------------------------------

@hookspec(firstresult=True)
def kiosk_print_receipt(receipt, automatic):
    """Print one receipt on this plugin's printer.

    :param receipt: a :class:`kiosk.Receipt` -- what to print: ``rows()`` top
        to bottom, or ``text_lines(width)`` laid out in character cells; the
        card is brand and last 4 only.
    :param automatic: ``True`` when the kiosk prints it unasked, after an
        approved sale or a refund; ``False`` when the vendor asked
        (``kiosk receipt``, the Payments screen).
    :returns: the printer's name (one line) once printed, or ``None`` when
        this plugin has no printer set up, or does not print unasked.
    Raise to say printing failed (``str()`` of the exception is told to the
    vendor in one line).  Called on the kiosk's receipt thread -- never the
    sale's, and only after the sale's result is out -- one receipt at a
    time; a slow or hung printer delays only other receipts.
    Stops at first non-None result.
    """


@hookspec(firstresult=True)
def kiosk_receipt_printer():
    """Name the receipt printer this plugin prints on.

    :returns: one line (``"network:192.168.1.50:9100"``), or ``None`` when
        this plugin has no printer set up.
    Called by ``KioskView.receipt_printer_ready()`` (a screen deciding whether
    to offer "Reprint"): answer from settings -- no hardware waits.
    Stops at first non-None result.
    """
