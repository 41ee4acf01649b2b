"""An in-process Bluetooth LE "air" for the emulated reader, on bumble.

Every device here is a real bumble host and link-layer controller; they talk
over one bumble ``LocalLink`` inside this process, on one asyncio event loop
(the loop that created the radio).  The kiosk side is one central device --
the "adapter" the bleak backend in ``bumble_backend.py`` drives; readers are
peripherals from ``emulated_reader.py``.

Pairing uses LE Secure Connections with passkey entry, as the profile asks:
the reader "displays" its passkey on the radio and the kiosk side "types" it,
standing in for the installer reading it off the reader's screen.

Never used unless ``[reader.ble] emulator = true``.
"""
from __future__ import annotations

import asyncio

from bumble import hci, pairing
from bumble.controller import Controller
from bumble.device import Device
from bumble.host import Host
from bumble.keys import MemoryKeyStore
from bumble.link import LocalLink
from bumble.transport.common import AsyncPipeSink

KIOSK_ADDRESS = "F0:4B:49:4F:53:4B"     # random static address of the kiosk's emulated adapter
PASSKEY_WAIT = 5.0


class EmulatedController(Controller):
    """bumble's link-layer controller, plus LE Create Connection Cancel as the
    Core spec has it: the pending connection is dropped and the host hears
    LE Connection Complete with Unknown Connection Identifier.  (bumble's own
    controller acknowledges the cancel but keeps connecting, so a connect to
    a reader that was switched off would never end.)"""

    def on_hci_le_create_connection_cancel_command(self, command):
        pending = self.pending_le_connection
        if pending is None:
            return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.COMMAND_DISALLOWED_ERROR)
        self.pending_le_connection = None
        failed = hci.HCI_LE_Connection_Complete_Event(
            status=hci.HCI_ErrorCode.UNKNOWN_CONNECTION_IDENTIFIER_ERROR, connection_handle=0,
            role=hci.Role.CENTRAL, peer_address_type=pending.peer_address.address_type,
            peer_address=pending.peer_address, connection_interval=0, peripheral_latency=0,
            supervision_timeout=0, central_clock_accuracy=0)
        # after the Command Complete this handler's return value becomes
        asyncio.get_running_loop().call_soon(self.send_hci_packet, failed)
        return hci.HCI_StatusReturnParameters(hci.HCI_ErrorCode.SUCCESS)


class _KioskPairing(pairing.PairingDelegate):
    """The kiosk side of passkey entry: types what the reader displays."""

    def __init__(self, radio: EmulatedRadio):
        super().__init__(io_capability=pairing.PairingDelegate.KEYBOARD_INPUT_ONLY)
        self.radio = radio

    async def get_number(self) -> int | None:
        try:
            return await asyncio.wait_for(self.radio.passkeys.get(), PASSKEY_WAIT)
        except TimeoutError:
            return None


class EmulatedRadio:
    """The shared air: one LocalLink, the kiosk's adapter, and the passkey
    the last reader displayed.  Create and use it on one event loop."""

    def __init__(self):
        self.link = LocalLink()
        self.passkeys: asyncio.Queue[int] = asyncio.Queue()
        self._central: Device | None = None
        self._central_lock = asyncio.Lock()

    def new_device(self, name: str, address: str) -> tuple[EmulatedController, Device]:
        """A bumble host + controller on this radio (not yet powered on)."""
        controller = EmulatedController(name, link=self.link)
        device = Device(name=name, address=hci.Address(address), host=Host(controller, AsyncPipeSink(controller)))
        device.keystore = MemoryKeyStore()      # bonds live as long as the process
        return controller, device

    async def central(self) -> Device:
        """The kiosk's adapter, powered on once and shared by scanners and clients."""
        async with self._central_lock:
            if self._central is None:
                _, device = self.new_device("kiosk", KIOSK_ADDRESS)
                device.pairing_config_factory = lambda connection: pairing.PairingConfig(
                    sc=True, mitm=True, bonding=True, delegate=_KioskPairing(self))
                await device.power_on()
                self._central = device
            return self._central

    def show_passkey(self, passkey: int) -> None:
        """A reader displays ``passkey``; the kiosk side will type it."""
        while not self.passkeys.empty():
            self.passkeys.get_nowait()
        self.passkeys.put_nowait(passkey)
