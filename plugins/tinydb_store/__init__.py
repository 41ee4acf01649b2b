"""Built-in storage plugin: the payment queue in TinyDB, settled history in
SQLite, both encrypted and crash-safe.

In the data directory:

- ``live.kdb`` -- payments still to forward, and the kiosk's bookkeeping: an
  AES-GCM encrypted append-only TinyDB log (see :mod:`.log_storage`).  It is
  bounded by ``[limits] max_pending``, so a new sale costs one small fsync'd
  append however long the kiosk has been selling.
- ``history.sqlite`` -- settled payments and the notice feed (see
  :mod:`.history`): read a page at a time, so memory and time do not grow
  with history.  A payment is written here first and only then removed from
  ``live.kdb``; a crash in between leaves it in both, which opening the
  store mends.
- ``kiosk.key`` -- the key (mode 0600), created by ``kiosk init`` and never
  overwritten.

One process at a time holds the store (``kiosk.lock``).  A directory written
by an earlier release (``history.kdb``, ``feed.kdb``) is migrated on open
(:mod:`.migrate`).  Never logs payment contents.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from pathlib import Path
from typing import Iterator

from tinydb import TinyDB
from tinydb.table import Document

from kiosk import (Payment, Setting, StoreAlarm, StoreBusy, crash_point, fsync_folder, hookimpl, iso, utcnow,
                   write_file_durably)

from . import log_storage
from .history import History
from .history_salvage import rebuild
from .key_protector import SEALED_FILE, SEALED_LEN, KeyProtector
from .key_protector import SETTINGS as KEY_SETTINGS
from .log_storage import EncryptedLogStorage, install_copy
from .migrate import OLD_FEED, OLD_HISTORY, migrate
from .mirror import heal, keep_aside_once
from .salvage import genuine_records, rewrite, salvage

log = logging.getLogger("kiosk.store")

KEY_FILE, LIVE_FILE, HISTORY_FILE, LOCK_FILE = "kiosk.key", "live.kdb", "history.sqlite", "kiosk.lock"
KEY_SIZES = {KEY_FILE: log_storage.KEY_LEN, SEALED_FILE: SEALED_LEN}    # what a whole key file holds
MIRROR_DAMAGE = "mirror-damage.json"    # an alarm on its way into the store (see _set_aside_unreadable_mirror)
LAST_SETTLED = "last_settled"       # meta: the payment the queue last handed to history
STORE_DAMAGE = "store_damage"       # meta: damage found and salvaged, until `kiosk recover`

SETTINGS = {
    "storage.tinydb": {
        "compact_every": Setting(int, 2000, "Rewrite the queue file as one snapshot after this many appends"),
        "migration_batch": Setting(int, 2000, "Settled payments copied per transaction when an earlier "
                                   "release's history.kdb is moved into history.sqlite"),
        **KEY_SETTINGS,
    },
}


def _open_db(path: Path, key: bytes, label: str, create: bool, compact_every: int, mirror=None) -> TinyDB:
    try:
        return TinyDB(path, storage=EncryptedLogStorage, key=key, label=label,
                      create=create, compact_every=compact_every, mirror=mirror)
    except log_storage.StoreAlarm as exc:
        alarm = StoreAlarm(str(exc))
        alarm.damaged, alarm.kept_aside, alarm.problem = exc.damaged, exc.kept_aside, exc.problem
        raise alarm from None


class TinyDBStore:
    """The :class:`kiosk.interfaces.PaymentStore`: the queue in TinyDB, history in SQLite.

    The queue and history each have their own lock, so background work on
    history never holds up a sale, which only touches ``live.kdb``."""

    def __init__(self, data_dir: Path, create: bool = False, compact_every: int = 2000,
                 migration_batch: int = 2000, protector: KeyProtector | None = None, mirror: Path | None = None):
        self.dir = Path(data_dir)
        self.protector = protector or KeyProtector()
        self.mirror = Path(mirror) if mirror else None
        self.mirror_problem: str | None = None     # the mirror could not be used: an alarm, never a refusal
        self.healed: list[str] = []                # copies healed from the other at this open: told once
        self._restored = False                     # this open brought the key back from the mirror
        self.live_lock = threading.RLock()
        self._lock_file = None
        self._restore_keys_from_mirror(create)
        existing = [n for n in (KEY_FILE, SEALED_FILE, LIVE_FILE, HISTORY_FILE, OLD_HISTORY) if (self.dir / n).exists()]
        fresh = create and not existing
        if fresh:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif not self.dir.is_dir() or not existing:
            raise StoreAlarm(f"no kiosk data in {self.dir}: run `kiosk init` first")
        self._hold_process_lock()
        self.live_db = self.history = None
        try:
            self._open(fresh, compact_every, migration_batch)
        except BaseException:
            self.close()          # a store that did not open holds no file and no lock
            raise

    def _open(self, fresh: bool, compact_every: int, migration_batch: int) -> None:
        try:
            key = self.protector.open_key(self.dir, create=fresh)     # kiosk.key, or sealed to this Pi
        except log_storage.StoreAlarm as exc:
            raise StoreAlarm(str(exc)) from None
        self._key = key
        for orphan in self.dir.glob(f".{LIVE_FILE}.tmp-*"):
            # a compaction killed before its rename: never the queue itself (we hold the lock)
            log.warning("removing %s, left by a compaction that was cut short", orphan.name)
            orphan.unlink(missing_ok=True)
        mirror = self._heal_from_mirror(key, fresh)
        # once a store exists, a missing queue file is an alarm, even for `kiosk init`
        try:
            self.live_db = _open_db(self.dir / LIVE_FILE, key, "live", fresh, compact_every, mirror)
        except StoreAlarm as alarm:
            if not alarm.damaged:
                raise
            self._salvage_live(key, alarm)          # damaged, yet selling
            self.live_db = _open_db(self.dir / LIVE_FILE, key, "live", False, compact_every, mirror)
        self.recovered = [self.live_db.storage] if self.live_db.storage.recovered_torn_tail else []
        self.live_payments = self.live_db.table("payments")
        self.meta = self.live_db.table("meta")
        # payment id -> TinyDB doc id, so updates never scan
        self._live_ids = {doc["id"]: doc.doc_id for doc in self.live_payments.all()}
        self._meta_ids = {doc["name"]: doc.doc_id for doc in self.meta.all()}
        self._next_doc_id = max([*self._live_ids.values(), *self._meta_ids.values()], default=0) + 1
        # history.sqlite is new with this release: an older directory gets one (and is migrated into
        # it), and so does a `kiosk init` cut short after making live.kdb (its log holds nothing yet)
        upgrading = (self.dir / OLD_HISTORY).exists()
        never_used = self.live_db.storage.records == 1 and not any(self.live_db.storage.read().values())
        # a card brought back from the mirror: settled history was not mirrored (Stripe keeps the ledger)
        restored = self._restored and not (self.dir / HISTORY_FILE).exists()
        try:
            self.history = History(self.dir / HISTORY_FILE, key, create=fresh or upgrading or never_used or restored)
        except StoreAlarm as alarm:
            if not alarm.damaged:
                raise
            self._salvage_history(key, alarm)       # a bad page costs its rows, never the stall
            self.history = History(self.dir / HISTORY_FILE, key)
        if restored:
            self.set_meta("history_file_id", self.history.file_id)
            self.set_meta(LAST_SETTLED, None)
            self.healed.append("settled payments are not on the mirror: they start again empty here "
                               "(Stripe's dashboard has them all)")
        self._record_mirror_damage()
        self._check_history_belongs()
        self.recovered += migrate(self.dir, key, self.history, max(1, migration_batch))
        self._check_history_has_last()
        self._mend_half_settled()

    def _restore_keys_from_mirror(self, create: bool) -> None:
        """A new card with the mirror plugged in: its key comes back from the
        mirror, so the queue can be healed from there instead of started over."""
        if not self.mirror or any((self.dir / n).exists() for n in (KEY_FILE, SEALED_FILE, LIVE_FILE)):
            return
        keys = [n for n in (KEY_FILE, SEALED_FILE) if (self.mirror / n).is_file()]
        if not keys or not (self.mirror / LIVE_FILE).is_file():
            return
        contents = {name: (self.mirror / name).read_bytes() for name in keys}
        damaged = self._damaged_keys(contents)
        if damaged:
            if create:      # `kiosk init` starts this card anew; anything else leaves the stick as it is
                self._set_aside_unreadable_mirror(damaged, keys)
            return
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, content in contents.items():
            install_copy(self.dir / name, content, None, 0)
        self._restored = True
        self.healed.append(f"{self.dir} was empty: the key and the queue were brought back from the "
                           f"mirror {self.mirror}")

    def _damaged_keys(self, contents: dict[str, bytes]) -> list[str]:
        """The mirror's key files that cannot be its queue's key, each with why:
        the wrong size (a FAT entry written before its data), or a plain key no
        record of the mirror's queue authenticates under (zeros of the right size)."""
        damaged = [f"{name} ({len(content)} bytes, not {KEY_SIZES[name]})" for name, content in contents.items()
                   if len(content) != KEY_SIZES[name]]
        plain = contents.get(KEY_FILE)
        if not damaged and plain is not None:
            if not genuine_records((self.mirror / LIVE_FILE).read_bytes(), plain, "live"):
                damaged.append(f"{KEY_FILE} (no record of the mirror's {LIVE_FILE} authenticates under it)")
        return damaged

    def _set_aside_unreadable_mirror(self, damaged: list[str], keys: list[str]) -> None:
        """A new card, and the mirror's key is damaged (a stick cut off by an
        earlier release before its key was on it): the queue's copy there
        cannot be read by anyone.  It is kept, set aside (its bytes as they
        are), and this card starts a queue of its own that the mirror copies
        from now on -- with an alarm, never silently.  The alarm is written
        here first (MIRROR_DAMAGE) and moved into the store once it is open,
        so a cut anywhere in between never loses it."""
        live = self.mirror / LIVE_FILE
        aside = keep_aside_once(live)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_durably(self.dir / MIRROR_DAMAGE, json.dumps({
            "file": f"the mirror's {LIVE_FILE}", "aside": str(aside),
            "problem": f"its key is damaged: {', '.join(damaged)}",
            "what": (f"could not read: the sales in {aside} -- without their key no one can; the old card, if "
                     f"you still have it, holds them (put it back in, or read its queue with image/flash)"
                     if aside else "the mirror's copy was empty: nothing on it to lose")}).encode())
        for name in keys:
            keep_aside_once(self.mirror / name)
            (self.mirror / name).unlink()
        live.unlink()
        fsync_folder(self.mirror)
        crash_point("mirror:after_set_aside")
        log.error("mirror %s: its key is damaged (%s); its queue copy set aside as %s, a new queue started",
                  self.mirror, ", ".join(damaged), aside)

    def _record_mirror_damage(self) -> None:
        """The alarm _set_aside_unreadable_mirror wrote, now in the store (until `kiosk recover`)."""
        pending = self.dir / MIRROR_DAMAGE
        if not pending.exists():
            return
        damage = json.loads(pending.read_text())
        if not any(d.get("kept_aside") == damage["aside"] for d in self.get_meta(STORE_DAMAGE, [])):
            self._record_damage(damage["file"], damage["problem"], damage["what"], damage["aside"])
        pending.unlink()
        fsync_folder(self.dir)

    def _heal_from_mirror(self, key: bytes, fresh: bool) -> Path | None:
        """Check the two copies of the queue against each other and heal one
        from the other; the mirror's path to write to, or None without one."""
        if not self.mirror:
            return None
        try:
            if not fresh:
                told = heal(self.dir / LIVE_FILE, self.mirror / LIVE_FILE, key, "live")
                if told:
                    self.healed.append(told)
            for name in (KEY_FILE, SEALED_FILE):    # the mirror is no use on a new card without its key
                if not (self.dir / name).is_file():
                    continue
                key_bytes, copy = (self.dir / name).read_bytes(), self.mirror / name
                if not copy.is_file():
                    install_copy(copy, key_bytes, None, 0)
                elif copy.read_bytes() != key_bytes:    # e.g. left at 0 bytes by a power cut on a FAT stick
                    keep_aside_once(copy)               # another kiosk's key, if the stick was: kept
                    install_copy(copy, key_bytes, None, 0)
                    self.healed.append(f"the mirror's {name} was damaged: written again from {self.dir}")
            if (self.mirror / SEALED_FILE).is_file() and not (self.dir / KEY_FILE).exists():
                (self.mirror / KEY_FILE).unlink(missing_ok=True)     # sealed to this Pi now: no key in clear
        except OSError as exc:
            self.mirror_problem = f"mirror {self.mirror}: {exc.strerror or exc}; sales are kept on one copy"
            log.error("%s", self.mirror_problem)
            return None
        return self.mirror / LIVE_FILE

    def _salvage_live(self, key: bytes, alarm: StoreAlarm) -> None:
        """A damaged or cut queue file: the kiosk goes on selling on every
        record that still reads, and the damage stays an alarm (``alarms()``)
        until ``kiosk recover``.  The damaged bytes are kept aside, once.
        If nothing reads (another key?), nothing is started over."""
        path = self.dir / LIVE_FILE
        found = salvage(path, key, "live")
        if not found.records:
            raise alarm
        state = found.state
        meta = state.setdefault("meta", {})
        state.setdefault("payments", {})
        entry = next((doc for doc in meta.values() if doc.get("name") == STORE_DAMAGE), None)
        if entry is None:
            doc_id = max((int(i) for table in state.values() for i in table), default=0) + 1
            entry = meta[str(doc_id)] = {"name": STORE_DAMAGE, "value": []}
        entry["value"].append({"file": LIVE_FILE, "kept_aside": alarm.kept_aside and Path(alarm.kept_aside).name,
                               "problem": alarm.problem.split("; copy kept aside")[0],
                               "salvaged": found.describe(), "found_at": iso(utcnow())})
        rewrite(path, key, "live", state, found.generation + 1)
        if self.mirror and self.mirror.is_dir():       # the mirror held no more (heal found nothing to add)
            with open(path, "rb") as handle:
                content, witness = handle.read(), log_storage.read_witness(handle.fileno())
            copy = self.mirror / LIVE_FILE
            if copy.exists():
                keep_aside_once(copy)
            install_copy(copy, content, witness[0] if witness else content[9:25], witness[2] if witness else 0)
        log.error("%s damaged: selling goes on with what still reads (%s); kept aside as %s; run `kiosk recover`",
                  path, found.describe(), alarm.kept_aside)

    def _salvage_history(self, key: bytes, alarm: StoreAlarm) -> None:
        aside, what = rebuild(self.dir / HISTORY_FILE, key, self.get_meta("history_file_id"))
        self._record_damage(HISTORY_FILE, str(alarm).split(": ", 1)[-1], what, aside)
        self.set_meta(LAST_SETTLED, None)     # the witness's work is done: what history lost is alarmed

    def _record_damage(self, name: str, problem: str, what: str, aside: str | None) -> None:
        """Damage salvaged: an alarm until `kiosk recover` (a store meta entry)."""
        self.set_meta(STORE_DAMAGE, [*self.get_meta(STORE_DAMAGE, []), {
            "file": name, "kept_aside": aside, "problem": problem, "salvaged": what,
            "found_at": iso(utcnow())}])

    def alarms(self) -> list[str]:
        """Damage found in the store and not yet dealt with (``kiosk recover``),
        and a mirror that cannot be written: one line each."""
        lines = [f"{d['file']} was damaged ({d['problem']}): {d['salvaged']}; kept aside as "
                 f"{d['kept_aside']}; run `kiosk recover`" for d in self.get_meta(STORE_DAMAGE, [])]
        problem = self.mirror_problem or (self.live_db.storage.mirror_problem if self.live_db else None)
        return lines + ([problem] if problem else [])

    def recover(self) -> list[str]:
        """``kiosk recover``: check history page by page (rebuilding it from
        what reads if a page is bad), read again every damaged queue file kept
        aside here and on the mirror, add back any payment that reads and is
        neither queued nor settled, then say exactly what could not be read
        ("could not read: ...") and clear the alarm."""
        if not self.history.intact():
            self.history.close()
            self._salvage_history(self._key, StoreAlarm("a page failed SQLite's check"))
            self.history = History(self.dir / HISTORY_FILE, self._key)
        report = []
        for damage in self.get_meta(STORE_DAMAGE, []):
            report.append(f"{damage['file']}: {damage['problem']}")
            report.append(f"  {damage['salvaged']}")
            copy = damage.get("kept_aside")
            if copy and (self.dir / copy).exists():
                report.append(f"  the damaged file is kept as {self.dir / copy}")
        added = 0
        copies = sorted(self.dir.glob(f"{LIVE_FILE}.bad-*"))
        if self.mirror and self.mirror.is_dir():
            copies += sorted(self.mirror.glob(f"{LIVE_FILE}.bad-*"))
        for copy in copies:
            found = salvage(copy, self._key, "live")
            for doc in found.state.get("payments", {}).values():
                payment = Payment.from_record(doc)
                if payment.id not in self._live_ids and not self.history.has(payment.id):
                    self.add(payment)
                    added += 1
                    report.append(f"  payment {payment.id} brought back from {copy}")
        report.append(f"{added} payments added back to the queue" if added
                      else "no payment that still reads was missing from the queue")
        self.set_meta(STORE_DAMAGE, [])
        return report

    def _hold_process_lock(self) -> None:
        path = self.dir / LOCK_FILE
        handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = handle.read().strip() or "?"
            handle.close()
            raise StoreBusy(f"the queue in {self.dir} is in use by another kiosk process (pid {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _check_history_belongs(self) -> None:
        """The queue names its history file: another store's history (same
        key, another ``kiosk init``) put in its place is an alarm."""
        known = self.get_meta("history_file_id")
        if known is None:
            self.set_meta("history_file_id", self.history.file_id)
        elif known != self.history.file_id:
            raise StoreAlarm(f"{self.history.path}: not the history this queue wrote (replaced, restored "
                             f"from elsewhere, or its -wal lost); refusing to mix them")

    def _mend_half_settled(self) -> None:
        for payment_id in [pid for pid in self._live_ids if self.history.has(pid)]:
            log.warning("payment %s was settled but still queued (crash while moving it); mending", payment_id)
            self._remove_live(payment_id)

    def _new_doc_id(self) -> int:
        # ours, not TinyDB's: each write names the one document it changes
        doc_id, self._next_doc_id = self._next_doc_id, self._next_doc_id + 1
        return doc_id

    def _remove_live(self, payment_id: str, settled: bool = False) -> None:
        """Take a payment out of the queue: one append.  A payment that just
        settled is also named as the last one history must hold (see
        _check_history_has_last), in that same append."""
        doc_id = self._live_ids[payment_id]
        witness = {}
        if settled:
            witness_id = self._meta_ids.get(LAST_SETTLED) or self._new_doc_id()
            witness = {"meta": [witness_id]}
        with self.live_db.storage.changing("payments", doc_id, also=witness):
            self.live_payments.remove(doc_ids=[doc_id])
            if settled:
                self.meta.upsert(Document({"name": LAST_SETTLED, "value": payment_id}, doc_id=witness_id))
        del self._live_ids[payment_id]        # only once the file says so
        if settled:
            self._meta_ids[LAST_SETTLED] = witness_id

    def _check_history_has_last(self) -> None:
        """The payment the queue last handed to history must be there.  A
        deleted or cut ``-wal``, or an older copy of the file, would otherwise
        lose the newest settled payments without a word: SQLite opens what is
        left."""
        last = self.get_meta(LAST_SETTLED)
        if last is not None and not self.history.has(last):
            raise StoreAlarm(f"{self.history.path}: settled payment {last} is missing from history "
                             f"(its file or {Path(self.history.path).name}-wal was deleted, cut or "
                             f"replaced with an older copy)")

    # -- payments -------------------------------------------------------------

    def add(self, payment: Payment) -> None:
        # a sale never waits for history (a forward's commit may hold it): ids
        # are 96 random bits, so only the queue is asked whether one is taken
        if payment.id in self._live_ids:
            raise ValueError(f"payment {payment.id} is already stored")
        if payment.settled:
            if self.history.has(payment.id):
                raise ValueError(f"payment {payment.id} is already stored")
            self.history.put(payment)
        else:
            with self.live_lock:
                doc_id = self._new_doc_id()
                with self.live_db.storage.changing("payments", doc_id):
                    self.live_payments.insert(Document(payment.to_record(), doc_id=doc_id))
                self._live_ids[payment.id] = doc_id

    def save(self, payment: Payment) -> None:
        if payment.settled:
            # history first: a crash between the two writes leaves a copy in both, never in neither
            self.history.put(payment)
            crash_point("settle:after_history")
            with self.live_lock:
                if payment.id in self._live_ids:
                    self._remove_live(payment.id, settled=True)
        else:
            with self.live_lock:
                doc_id = self._live_ids.get(payment.id)
                if doc_id is None:
                    raise KeyError(f"payment {payment.id} is not in the live queue")
                with self.live_db.storage.changing("payments", doc_id):
                    self.live_payments.upsert(Document(payment.to_record(), doc_id=doc_id))

    def get(self, payment_id: str) -> Payment | None:
        with self.live_lock:
            if payment_id in self._live_ids:
                return Payment.from_record(self.live_payments.get(doc_id=self._live_ids[payment_id]))
        return self.history.get(payment_id)

    def live(self) -> list[Payment]:
        with self.live_lock:
            payments = [Payment.from_record(doc) for doc in self.live_payments.all()]
        return sorted(payments, key=lambda p: p.created_at)

    def settled(self, limit: int | None = None, since: str | None = None,
                until: str | None = None) -> Iterator[Payment]:
        """The newest sale first, read a page at a time; ``since``: taken at or
        after, ``until``: taken before (ISO 8601 UTC)."""
        return self.history.newest(limit, since, until)

    def settled_count(self) -> int:
        return self.history.count()

    def add_settled(self, payments) -> int:
        """Settled payments stored in one durable transaction, each unless it
        is stored already (moving an old history in; seeding a benchmark)."""
        return self.history.put_many(payments)

    def needing_follow_up(self) -> list[Payment]:
        return self.history.needing_follow_up()

    def prune(self, before: str) -> int:
        """Forget up to 1,000 settled payments settled before ``before``; never
        one still to follow up.  Stripe keeps the ledger."""
        return self.history.prune(before, keep=self.get_meta(LAST_SETTLED))

    # -- bookkeeping ----------------------------------------------------------

    def get_meta(self, name: str, default=None):
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            return default if doc_id is None else self.meta.get(doc_id=doc_id)["value"]

    def set_meta(self, name: str, value) -> None:
        with self.live_lock:
            doc_id = self._meta_ids.get(name)
            if doc_id is None:
                doc_id = self._new_doc_id()
                with self.live_db.storage.changing("meta", doc_id):
                    self.meta.insert(Document({"name": name, "value": value}, doc_id=doc_id))
                self._meta_ids[name] = doc_id
            else:
                with self.live_db.storage.changing("meta", doc_id):
                    self.meta.upsert(Document({"name": name, "value": value}, doc_id=doc_id))

    def add_notice(self, notice: dict) -> None:
        self.history.add_notice(notice)

    def notices(self, limit: int = 100) -> list[dict]:
        return self.history.notices(limit)

    def maintain(self) -> None:
        """Bounded: trims the feed, checkpoints history's WAL (what was written
        since the last one) and compacts the queue file (bounded by max_pending)."""
        self.history.trim_notices()
        self.history.checkpoint()
        with self.live_lock:
            if self.live_db.storage.needs_compaction():
                self.live_db.storage.compact()

    def close(self) -> None:
        with self.live_lock:
            if self.live_db is not None:
                self.live_db.close()
            if self.history is not None:
                self.history.close()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def move_out(self, payments) -> None:
        """Payments exported to another kiosk (state ``moved``) leave the queue
        for history: one history transaction -- the durable step -- then one
        append taking them all out of the queue.  A crash in between leaves
        them in both, which opening mends (as after a settle)."""
        payments = list(payments)
        with self.live_lock:
            missing = [p.id for p in payments if p.id not in self._live_ids or not p.settled]
            if missing:
                raise KeyError(f"not in the live queue, or not moved: {', '.join(missing)}")
            if not payments:
                return
            self.history.put_many(payments, replace=True)
            crash_point("move:after_history")
            doc_ids = [self._live_ids[p.id] for p in payments]
            witness_id = self._meta_ids.get(LAST_SETTLED) or self._new_doc_id()
            with self.live_db.storage.changing("payments", *doc_ids, also={"meta": [witness_id]}):
                self.live_payments.remove(doc_ids=doc_ids)
                self.meta.upsert(Document({"name": LAST_SETTLED, "value": payments[-1].id}, doc_id=witness_id))
            for payment in payments:
                del self._live_ids[payment.id]        # only once the file says so
            self._meta_ids[LAST_SETTLED] = witness_id


class TinyDBStoragePlugin:
    @hookimpl
    def kiosk_settings(self):
        return SETTINGS

    @hookimpl
    def kiosk_storage_files(self, settings):
        # the -wal file holds history committed since the last checkpoint; the
        # old files are there on a card an earlier release wrote
        return [KEY_FILE, SEALED_FILE, LIVE_FILE, HISTORY_FILE, HISTORY_FILE + "-wal", OLD_HISTORY, OLD_FEED]

    @hookimpl
    def kiosk_open_storage(self, settings, data_dir, create):
        own = settings["storage.tinydb"]
        mirror = settings.get("storage", {}).get("mirror")
        return TinyDBStore(data_dir, create=create, compact_every=own["compact_every"], mirror=mirror or None,
                           migration_batch=own.get("migration_batch", 2000),
                           protector=KeyProtector.from_settings(own))


plugin = TinyDBStoragePlugin()
