"""The second copy of the queue (``[storage] mirror``): checked against the
first at every open, and healed.

Every append lands, fsync'd, in both copies before it is acknowledged
(:class:`.log_storage.EncryptedLogStorage` with ``mirror=``), so the two
files are byte for byte the same but for one record at most (a power cut
between the two appends: acknowledged in neither).  At open:

- the same bytes: nothing to do;
- one a shorter prefix of the other, not cut: the longer one's last record
  was never acknowledged; the copies are made equal quietly;
- one damaged, cut or missing: it is healed from the other (the damaged one
  is kept aside, once), and the vendor is told;
- both damaged: the genuine records of each are merged record by record;
  if that gives the whole file, both are healed; otherwise the store's
  salvage takes over with an alarm.

Never reads a missing mirror folder as an empty copy: a USB stick that is not
plugged in is an alarm, not a fresh start.  Never logs payment contents.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from .salvage import genuine_records
from .log_storage import HEADER_LEN, MAGIC, EncryptedLogStorage, install_copy, read_witness

log = logging.getLogger("kiosk.store")


@dataclass
class Copy:
    path: Path
    buf: bytes | None          # None: no such file
    witness: object
    records: int = 0
    good_end: int = 0
    file_id: bytes | None = None
    problem: str | None = None
    generation: int = 0
    state: dict | None = None

    @property
    def good(self) -> bool:
        return self.buf is not None and self.problem is None

    @property
    def acknowledged(self) -> bytes:
        return self.buf[:self.good_end] if self.good else b""


def _read(path: Path, key: bytes, label: str) -> Copy:
    try:
        with open(path, "rb") as handle:
            buf = handle.read()
            witness = read_witness(handle.fileno())
    except FileNotFoundError:
        return Copy(path, None, None, problem="missing")
    except OSError as e:
        return Copy(path, None, None, problem=f"cannot be read ({e.strerror})")
    records, good_end, file_id, problem, generation, state = EncryptedLogStorage.judge(buf, witness, key, label)
    return Copy(path, buf, witness, records, good_end, file_id, problem, generation, state)


def keep_aside_once(path: Path, buf: bytes | None = None) -> Path | None:
    """The damaged bytes, kept once beside the copy (named by their content);
    where they are kept, or None when there was nothing to keep."""
    buf = path.read_bytes() if buf is None else buf
    if not buf:
        return None
    aside = path.with_name(f"{path.name}.bad-{hashlib.sha256(buf).hexdigest()[:16]}")
    if not aside.exists():
        install_copy(aside, buf, None, 0)
    return aside


def _keep_aside(copy: Copy) -> None:
    if copy.buf:
        keep_aside_once(copy.path, copy.buf)


def _cut(copy: Copy) -> bool:
    """Shorter than its own witness says it was acknowledged (judge passed it
    only because the witness is another file's, or absent)."""
    return bool(copy.witness) and copy.witness[0] == copy.file_id and copy.witness[1] > copy.good_end


def _install(dest: Copy, source: Copy) -> None:
    install_copy(dest.path, source.acknowledged, source.file_id, source.records)


def heal(first: Path, mirror: Path, key: bytes, label: str) -> str | None:
    """Make the two copies equal before the store opens them.  Returns a
    one-line notice when the vendor should know (a copy was healed), None
    when nothing worth telling happened.  Raises OSError when the mirror's
    folder is not there (a stick not plugged in): the caller alarms."""
    if not mirror.parent.is_dir():
        raise FileNotFoundError(f"mirror folder {mirror.parent} is not there (is the USB stick plugged in?)")
    a, b = _read(first, key, label), _read(mirror, key, label)
    if a.good and b.good:
        if a.acknowledged == b.acknowledged:
            return None
        if a.file_id == b.file_id and (a.acknowledged.startswith(b.acknowledged)
                                       or b.acknowledged.startswith(a.acknowledged)):
            longer, shorter = (a, b) if a.good_end > b.good_end else (b, a)
            if not _cut(shorter):
                _install(shorter, longer)       # one record acknowledged in neither: quietly
                return None
            _keep_aside(shorter)
            _install(shorter, longer)
            return f"{shorter.path} was an older copy (restored from a backup?): healed from {longer.path}"
        if a.file_id == b.file_id:              # the same file, diverged: never written that way by the kiosk
            newer, older = (a, b) if a.records >= b.records else (b, a)
        else:                                   # another generation: the newer one (a compaction or salvage)
            newer, older = (a, b) if a.generation >= b.generation else (b, a)
        if a.file_id != b.file_id and newer.state == older.state:
            _install(older, newer)              # a compaction cut between its two renames: same sales
            return None
        _keep_aside(older)                      # never overwrite a copy without keeping it: `kiosk recover` reads it
        _install(older, newer)
        log.warning("store copies %s and %s differ; kept %s, set the other aside", a.path, b.path, newer.path)
        return (f"{older.path} differed from {newer.path} (an older copy put back, or a copy salvaged while the "
                f"other was away): kept the newer, the other set aside for `kiosk recover`")
    if a.buf is None and b.buf is None:
        return None                             # a new store, or both gone: opening says which
    if a.good or b.good:
        good, bad = (a, b) if a.good else (b, a)
        if bad is b and b.buf is None:
            _install(b, a)                      # a mirror newly set up, or its file deleted
            return f"the mirror {b.path} was missing: copied from {a.path}"
        _keep_aside(bad)
        _install(bad, good)
        log.warning("store copy %s was damaged (%s); healed from %s", bad.path, bad.problem, good.path)
        return f"{bad.path} was {bad.problem if bad.buf is None else 'damaged (' + bad.problem + ')'}: healed from {good.path}"
    merged = _merge(a, b, key, label)
    if merged is None:
        return None                             # both damaged the same way: the store salvages, with an alarm
    for copy in (a, b):
        _keep_aside(copy)
        _install(copy, merged)
    return f"both copies of {first.name} were damaged: healed record by record from the two"


def _merge(a: Copy, b: Copy, key: bytes, label: str) -> Copy | None:
    """The whole file rebuilt from the genuine records of both, if together they have them all."""
    if not (a.buf and b.buf) or len(a.buf) < HEADER_LEN or a.buf[:HEADER_LEN] != b.buf[:HEADER_LEN]:
        return None
    header = a.buf[:HEADER_LEN]
    if header[:len(MAGIC)] != MAGIC:
        return None
    records = {}
    for copy in (a, b):
        records.update({seq: raw for seq, raw in genuine_records(copy.buf, key, label).items()
                        if seq not in records})
    if not records or sorted(records) != list(range(len(records))):
        return None
    buf = header + b"".join(records[seq] for seq in range(len(records)))
    witness = max((c.witness for c in (a, b) if c.witness), key=lambda w: w[1], default=None)
    merged = Copy(a.path, buf, witness)
    (merged.records, merged.good_end, merged.file_id, merged.problem, merged.generation,
     merged.state) = EncryptedLogStorage.judge(buf, witness, key, label)
    return merged if merged.good else None
