"""Where the queue's key lies on the card, and what protects it there.

``[storage.tinydb] key_protector`` chooses one of two:

- ``file`` (the default, and all that earlier releases knew): ``kiosk.key``,
  the 32 raw bytes, mode 0600.  Whoever holds the card holds the key.
- ``device``: ``kiosk.key.device``, the same 32 bytes sealed with AES-256-GCM
  under a key derived (HKDF-SHA256) from the Raspberry Pi's OTP customer
  private key, which ``otp_command`` (``rpi-otp-private-key``) prints.  The
  card alone cannot be read; in the Pi that wrote it, it opens as before.

Switching a kiosk from ``file`` to ``device`` seals the key it has: the
sealed file is made durable before the plain one is erased, so one of the
two is on disk at every moment.  Both give exactly the same 32 bytes, so the
queue and history (whose key is derived from them) are not touched.

Never writes the key or the OTP secret in clear (except ``kiosk.key`` in
``file`` mode), never logs or prints either, never makes a new key where a
key of either kind lies, and never programs the OTP (that is permanent, and
the vendor's choice).
"""
from __future__ import annotations

import errno
import hmac
import logging
import os
import re
import shlex
import subprocess
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kiosk import Setting, crash_point, fsync_folder, settle_rename, write_all


from . import log_storage
from .log_storage import KEY_LEN, StoreAlarm, read_private

log = logging.getLogger("kiosk.store")

PLAIN_FILE, SEALED_FILE = "kiosk.key", "kiosk.key.device"
ERASING = ".kiosk.key.erasing"      # the plain key on its way out, once the sealed one is durable
PROTECTORS = ("file", "device")
OTP_TIMEOUT = 20                    # seconds: vcmailbox answers at once; a hung firmware call must not hang the kiosk

SETTINGS = {
    "key_protector": Setting(str, "file", "Where the queue's key lies: file (kiosk.key, as before) or device "
                             "(sealed to this Raspberry Pi's OTP private key; see docs/secrets.md)",
                             choices=PROTECTORS),
    "otp_command": Setting(str, "rpi-otp-private-key", "Command that prints this Pi's OTP private key in hex "
                           "(key_protector = \"device\")"),
}

MAGIC = b"KIOSKKEY-DEVICE1"         # format and version of kiosk.key.device
SALT_LEN, CHECK_LEN, NONCE_LEN = 16, 16, 12
SEALED_LEN = len(MAGIC) + SALT_LEN + CHECK_LEN + NONCE_LEN + KEY_LEN + 16
_HEX = re.compile(r"[0-9a-fA-F]+")
_LONG_HEX = re.compile(r"[0-9a-fA-F]{16,}")


# -- the Pi's secret --------------------------------------------------------------

def read_device_secret(command: str, where: Path) -> bytes:
    """The OTP private key ``command`` prints (64 hex digits; 128 with ``-l 16`` on a Pi 5).
    StoreAlarm, one line and never the secret, if it cannot be had."""
    argv = shlex.split(command)
    if not argv:
        raise StoreAlarm(where, 'key_protector = "device" but [storage.tinydb] otp_command is empty')
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=OTP_TIMEOUT)
    except FileNotFoundError:
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r} is not installed "
                                f"(it comes with Raspberry Pi's rpi-eeprom tools; see docs/secrets.md)") from None
    except PermissionError:
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r} is not executable") from None
    except OSError as exc:
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r} gave no answer "
                                f"in {OTP_TIMEOUT} s") from None
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        # what it said, less anything that could be key material
        said = _LONG_HEX.sub("…", said[0])[:120] if said else "no message"
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r} failed "
                                f"(exit {done.returncode}: {said}); is this a Raspberry Pi 4 or 5, and "
                                f"is the kiosk's user in the video group?")
    text = done.stdout.decode("ascii", "replace").strip()
    if not _HEX.fullmatch(text) or len(text) % 2 or not 2 * KEY_LEN <= len(text) <= 4 * KEY_LEN:
        raise StoreAlarm(where, f"cannot read this Pi's OTP private key: {argv[0]!r} printed "
                                f"{len(text)} characters that are not a 64-digit hex key")
    secret = bytes.fromhex(text)
    if not any(secret):
        raise StoreAlarm(where, "this Pi's OTP private key is not programmed (it reads as zeros): program "
                                "one (docs/secrets.md) or set [storage.tinydb] key_protector = \"file\"")
    return secret


# -- sealing ------------------------------------------------------------------------

def _derive(secret: bytes, salt: bytes, purpose: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=purpose).derive(secret)


def seal(key: bytes, secret: bytes) -> bytes:
    """``key`` sealed under ``secret``: magic, salt, a check of the secret, nonce, AES-GCM box."""
    salt, nonce = os.urandom(SALT_LEN), os.urandom(NONCE_LEN)
    check = _derive(secret, salt, b"kiosk/device-check/v1", CHECK_LEN)
    header = MAGIC + salt + check
    box = AESGCM(_derive(secret, salt, b"kiosk/queue-key-wrap/v1", 32)).encrypt(nonce, key, header)
    return header + nonce + box


def unseal(blob: bytes, secret: bytes, where: Path) -> bytes:
    """The key in ``blob``; StoreAlarm naming why not (another Pi's card, a damaged file)."""
    if len(blob) != SEALED_LEN or not blob.startswith(MAGIC):
        raise StoreAlarm(where, f"not a sealed kiosk key ({len(blob)} bytes, expected {SEALED_LEN}): "
                                f"damaged or replaced")
    at = len(MAGIC)
    salt, at = blob[at:at + SALT_LEN], at + SALT_LEN
    check, at = blob[at:at + CHECK_LEN], at + CHECK_LEN
    header, nonce, box = blob[:at], blob[at:at + NONCE_LEN], blob[at + NONCE_LEN:]
    # the check tells "another Pi" from "damaged file": both fail the box alone
    if not hmac.compare_digest(check, _derive(secret, salt, b"kiosk/device-check/v1", CHECK_LEN)):
        raise StoreAlarm(where, "this card was written by another kiosk's Pi: its queue key is sealed to that "
                                "Pi's OTP key and cannot be read here; put the card back in its own Pi "
                                "(docs/secrets.md)")
    try:
        return AESGCM(_derive(secret, salt, b"kiosk/queue-key-wrap/v1", 32)).decrypt(nonce, box, header)
    except InvalidTag:
        raise StoreAlarm(where, "sealed key failed authentication although it was sealed on this Pi: "
                                "the file is damaged or was changed") from None


# -- on disk ------------------------------------------------------------------------

def _read_private(path: Path) -> bytes:
    """A sealed key file's bytes, refused unless it is a regular file only its owner can read."""
    return read_private(path, SEALED_LEN + 1)


def _write_new(path: Path, data: bytes) -> None:
    """``data`` at ``path`` (0600), durably and all at once; never over an existing file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        crash_point("seal:after_temp")
        try:
            os.link(tmp, path)          # a rename that refuses to replace: never a key over a key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP) or path.exists():
                raise
            os.rename(tmp, path)        # a file system without hard links; the store's lock keeps others out
    finally:
        tmp.unlink(missing_ok=True)
    settle_rename(path)             # FAT (no hard links) keeps a renamed file empty until this


def _erase_plain(data_dir: Path) -> None:
    """Take the plain key off the card once the sealed one is durable: renamed
    (so a crash leaves nothing that looks like a key), overwritten, removed.
    A failure leaves it for the next open to finish: the sealed key is safe."""
    plain, erasing = data_dir / PLAIN_FILE, data_dir / ERASING
    try:
        if plain.exists():
            os.replace(plain, erasing)
            fsync_folder(data_dir)
            crash_point("seal:after_aside")
        if erasing.exists():
            fd = os.open(erasing, os.O_WRONLY)
            try:
                # the file system's blocks get other bytes; the flash's spare copies may not (docs/secrets.md)
                write_all(fd, os.urandom(KEY_LEN))
                os.fsync(fd)
            finally:
                os.close(fd)
            crash_point("seal:after_overwrite")
            erasing.unlink()
            fsync_folder(data_dir)
    except OSError as exc:
        log.warning("the plain queue key is sealed but not yet erased (%s); the next start tries again",
                    exc.strerror)


class KeyProtector:
    """Gives the store its 32-byte key, as ``[storage.tinydb] key_protector`` says."""

    def __init__(self, protector: str = "file", otp_command: str = "rpi-otp-private-key"):
        if protector not in PROTECTORS:
            raise ValueError(f"key_protector must be one of {', '.join(PROTECTORS)}, not {protector!r}")
        self.protector, self.otp_command = protector, otp_command

    @classmethod
    def from_settings(cls, own: dict) -> "KeyProtector":
        return cls(own.get("key_protector", "file"), own.get("otp_command", "rpi-otp-private-key"))

    def open_key(self, data_dir, create: bool) -> bytes:
        """The queue's key; made (``create``) only where neither kind of key file lies."""
        data_dir = Path(data_dir)
        if self.protector == "device":
            return self._device_key(data_dir, create)
        sealed = data_dir / SEALED_FILE
        if sealed.exists():
            raise StoreAlarm(sealed, "the queue's key is sealed to this Pi (key_protector was \"device\"); "
                                     "set [storage.tinydb] key_protector = \"device\" again")
        if create:
            log_storage.create_key(data_dir / PLAIN_FILE)
        return log_storage.load_key(data_dir / PLAIN_FILE)

    def _device_key(self, data_dir: Path, create: bool) -> bytes:
        plain, sealed = data_dir / PLAIN_FILE, data_dir / SEALED_FILE
        for orphan in data_dir.glob(f".{SEALED_FILE}.tmp-*"):
            orphan.unlink(missing_ok=True)      # a seal killed before its link: the plain key is still there
        if sealed.exists():
            key = unseal(_read_private(sealed), read_device_secret(self.otp_command, sealed), sealed)
            if plain.exists() and log_storage.load_key(plain) != key:
                raise StoreAlarm(plain, f"differs from the key sealed in {SEALED_FILE}: two keys for one "
                                        f"queue; nothing was changed (docs/secrets.md)")
            _erase_plain(data_dir)              # a switch to "device" cut short after sealing: finish it
            return key
        if plain.exists():
            key = log_storage.load_key(plain)   # checked before anything is written
        elif create:
            key = os.urandom(KEY_LEN)
        else:
            raise StoreAlarm(sealed, f"key file missing (neither {PLAIN_FILE} nor {SEALED_FILE})")
        secret = read_device_secret(self.otp_command, sealed)
        try:
            _write_new(sealed, seal(key, secret))
        except OSError as exc:
            raise StoreAlarm(sealed, f"cannot seal the queue's key ({exc.strerror}); "
                                     f"{'kiosk.key is kept as it was' if plain.exists() else 'nothing written'}"
                             ) from None
        if unseal(_read_private(sealed), secret, sealed) != key:
            raise StoreAlarm(sealed, "the sealed key does not read back; kiosk.key is kept")
        crash_point("seal:after_link")
        _erase_plain(data_dir)
        return key
