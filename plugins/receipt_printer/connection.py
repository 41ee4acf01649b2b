"""``[receipt_printer] connection``: which printer, read without touching it.

``usb:VID:PID`` (hex, as ``lsusb`` shows them: ``usb:04b8:0202``),
``serial:/dev/ttyUSB0[:baud]`` (a Bluetooth printer bound with ``rfcomm``:
``serial:/dev/rfcomm0``), ``network:HOST[:PORT]`` (port 9100 when left out;
an IPv6 address in brackets), ``file:/dev/usb/lp0``.  Never opens a device.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 9100         # the raw printing port ESC/POS network printers listen on
DEFAULT_BAUD = 9600
EXAMPLES = "usb:04b8:0202, serial:/dev/ttyUSB0:9600, network:192.168.1.50:9100 or file:/dev/usb/lp0"


@dataclass(frozen=True)
class Connection:
    kind: str                   # "usb", "serial", "network" or "file"
    device: str = ""            # serial or file: the device path; network: the host
    port: int = 0               # network port, serial baud rate
    vendor: int = 0             # usb
    product: int = 0


def parse(text: str) -> Connection:
    """The connection ``text`` names; ``ValueError`` (one line) when it names none."""
    kind, _, rest = text.strip().partition(":")
    if kind == "usb":
        vendor, _, product = rest.partition(":")
        try:
            return Connection("usb", vendor=int(vendor, 16), product=int(product, 16))
        except ValueError:
            raise ValueError("usb: wants the vendor and product ids in hex, like usb:04b8:0202") from None
    if kind == "serial":
        device, _, baud = rest.partition(":")
        if not device.startswith("/"):
            raise ValueError("serial: wants a device path, like serial:/dev/ttyUSB0 or serial:/dev/rfcomm0")
        if baud and not baud.isdigit():
            raise ValueError(f"serial: the baud rate must be a number, not {baud!r}")
        return Connection("serial", device=device, port=int(baud) if baud else DEFAULT_BAUD)
    if kind == "network":
        host, port = _host_port(rest)
        return Connection("network", device=host, port=port)
    if kind == "file":
        if not rest.startswith("/"):
            raise ValueError("file: wants a device path, like file:/dev/usb/lp0")
        return Connection("file", device=rest)
    raise ValueError(f"{text!r} is not a printer connection (like {EXAMPLES})")


def _host_port(rest: str) -> tuple[str, int]:
    if rest.startswith("["):                    # [2001:db8::5]:9100
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = rest.partition(":")
    if not host:
        raise ValueError("network: wants a host, like network:192.168.1.50 or network:printer.local:9100")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"network: the port must be 1-65535, not {port!r}")
    return host, int(port) if port else DEFAULT_PORT


def connection_problem(text: str) -> str | None:
    """For the setting's ``check``: one line of what is wrong, or None ("" is off)."""
    if not text:
        return None
    try:
        parse(text)
    except ValueError as exc:
        return str(exc)
    return None


def describe(connection: Connection) -> str:
    """One line naming the printer, for status and messages."""
    if connection.kind == "usb":
        return f"usb:{connection.vendor:04x}:{connection.product:04x}"
    if connection.kind == "network":
        host = f"[{connection.device}]" if ":" in connection.device else connection.device
        return f"network:{host}:{connection.port}"
    if connection.kind == "serial":
        return f"serial:{connection.device}:{connection.port}"
    return f"file:{connection.device}"
