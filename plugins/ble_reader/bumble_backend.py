"""A bleak backend whose "adapter" is a bumble central on an emulated radio.

bleak takes a custom backend through ``BleakScanner(..., backend=cls)`` and
``BleakClient(..., backend=cls)`` (bleak >= 0.18; the classes implement
:class:`bleak.backends.scanner.BaseBleakScanner` and
:class:`bleak.backends.client.BaseBleakClient`).  With it, the reader plugin's
production code -- ``BleakScanner``, ``bleak_retry_connector.establish_connection``,
``BleakClient.write_gatt_char``, ``start_notify`` -- runs unchanged against
the emulated reader: scanning is real advertising reports, connecting is a
real LE connection, pairing is real SMP, reads, writes and notifications are
real ATT PDUs, all between bumble stacks inside this process.

:func:`backends_for` binds the two classes to one radio (bleak wants classes,
not instances).  Use them on the radio's event loop.  Never the default:
only ``[reader.ble] emulator = true`` selects them.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.client import BaseBleakClient, NotifyCallback
from bleak.backends.descriptor import BleakGATTDescriptor
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData, BaseBleakScanner
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError, BleakGATTProtocolError
from bumble import att, core, hci
from bumble.core import AdvertisingData
from bumble.device import Peer
from bumble.gatt import Characteristic

from .emulated_radio import EmulatedRadio
from .errors import PairingRefused
from .profile import PREFERRED_ATT_MTU

log = logging.getLogger("kiosk.ble_reader.backend")

_UUID_LISTS = (
    AdvertisingData.COMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_16_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.COMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_32_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.COMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
    AdvertisingData.INCOMPLETE_LIST_OF_128_BIT_SERVICE_CLASS_UUIDS,
)
_SERVICE_DATA = (AdvertisingData.SERVICE_DATA_16_BIT_UUID, AdvertisingData.SERVICE_DATA_32_BIT_UUID,
                 AdvertisingData.SERVICE_DATA_128_BIT_UUID)
_PROPERTIES = (
    (Characteristic.Properties.BROADCAST, "broadcast"),
    (Characteristic.Properties.READ, "read"),
    (Characteristic.Properties.WRITE_WITHOUT_RESPONSE, "write-without-response"),
    (Characteristic.Properties.WRITE, "write"),
    (Characteristic.Properties.NOTIFY, "notify"),
    (Characteristic.Properties.INDICATE, "indicate"),
    (Characteristic.Properties.AUTHENTICATED_SIGNED_WRITES, "authenticated-signed-writes"),
    (Characteristic.Properties.EXTENDED_PROPERTIES, "extended-properties"),
)


def uuid_str(value: core.UUID) -> str:
    """bumble's UUID (little-endian inside) as bleak writes it: 128-bit, lower case."""
    return str(uuid.UUID(bytes=value.to_bytes(force_128=True)[::-1]))


@dataclass(frozen=True)
class EmulatedDeviceDetails:
    """``BLEDevice.details`` for a device seen on the emulated radio."""
    address: hci.Address


def backends_for(radio: EmulatedRadio) -> tuple[type[BaseBleakScanner], type[BaseBleakClient]]:
    """Scanner and client classes bound to ``radio``, for bleak's ``backend=``."""
    scanner = type("EmulatedBleakScanner", (BumbleScanner,), {"radio": radio})
    client = type("EmulatedBleakClient", (BumbleClient,), {"radio": radio})
    return scanner, client


class BumbleScanner(BaseBleakScanner):
    radio: ClassVar[EmulatedRadio]

    def __init__(self, detection_callback=None, service_uuids=None, scanning_mode="active", **kwargs: Any):
        super().__init__(detection_callback, service_uuids)
        self._active = scanning_mode != "passive"
        self._central = None

    async def start(self) -> None:
        self.seen_devices = {}
        self._central = await self.radio.central()
        self._central.on("advertisement", self._on_advertisement)
        await self._central.start_scanning(active=self._active, filter_duplicates=False)

    async def stop(self) -> None:
        central, self._central = self._central, None
        if central is None:
            return
        central.remove_listener("advertisement", self._on_advertisement)
        if central.is_scanning:
            await central.stop_scanning()

    def _on_advertisement(self, advertisement) -> None:
        data = advertisement.data
        # advertisement and scan response arrive merged: list each UUID once, as BlueZ does
        service_uuids = list(dict.fromkeys(uuid_str(u) for kind in _UUID_LISTS for found in data.get_all(kind)
                                           for u in found))
        if not self.is_allowed_uuid(service_uuids):
            return
        name = data.get(AdvertisingData.COMPLETE_LOCAL_NAME) or data.get(AdvertisingData.SHORTENED_LOCAL_NAME)
        manufacturer = dict(data.get_all(AdvertisingData.MANUFACTURER_SPECIFIC_DATA))
        service_data = {uuid_str(u): payload for kind in _SERVICE_DATA for u, payload in data.get_all(kind)}
        tx_power = data.get(AdvertisingData.TX_POWER_LEVEL)
        adv = AdvertisementData(local_name=name, manufacturer_data=manufacturer, service_data=service_data,
                                service_uuids=service_uuids, tx_power=tx_power, rssi=advertisement.rssi,
                                platform_data=(advertisement,))
        address = advertisement.address.to_string(with_type_qualifier=False)
        device = self.create_or_update_device(address, address, name, EmulatedDeviceDetails(advertisement.address),
                                              adv)
        self.call_detection_callbacks(device, adv)


class BumbleClient(BaseBleakClient):
    radio: ClassVar[EmulatedRadio]

    def __init__(self, address_or_ble_device: BLEDevice | str, *, disconnected_callback=None,
                 timeout: float = 10.0, services=None, **kwargs: Any):
        super().__init__(address_or_ble_device, disconnected_callback=disconnected_callback, timeout=timeout)
        details = getattr(address_or_ble_device, "details", None)
        self._peer_address = (details.address if isinstance(details, EmulatedDeviceDetails)
                              else hci.Address(str(address_or_ble_device)))
        self._device_name = getattr(address_or_ble_device, "name", None)
        self._only_services = services
        self._connection = None
        self._peer: Peer | None = None
        self._subscribers: dict[int, Any] = {}
        self._disconnecting = False

    # -- state -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._device_name or self.address.replace(":", "-")

    @property
    def mtu_size(self) -> int:
        return self._connection.att_mtu if self._connection is not None else att.ATT_DEFAULT_MTU

    @property
    def is_connected(self) -> bool:
        return self._connection is not None

    # -- connecting ------------------------------------------------------------

    async def connect(self, pair: bool, **kwargs: Any) -> None:
        timeout = min(kwargs.get("timeout", self._timeout), self._timeout)
        central = await self.radio.central()
        try:
            connection = await central.connect(self._peer_address, timeout=timeout)
        except asyncio.CancelledError:
            # leave the adapter able to connect again (LE Create Connection Cancel)
            if central.is_le_connecting:
                await asyncio.shield(central.cancel_connection())
            raise
        except core.TimeoutError:
            raise TimeoutError(f"{self.address} did not answer within {timeout:g} s") from None
        except core.ConnectionError as exc:
            raise BleakError(f"could not connect to {self.address}: {exc}") from exc
        self._connection, self._disconnecting = connection, False
        connection.on("disconnection", self._on_disconnection)
        try:
            if pair:
                await self._secure(connection, force_pairing=False)
            peer = Peer(connection)
            await self._request(peer.request_mtu(PREFERRED_ATT_MTU))
            self._peer = peer
            self.services = await self._discover(peer)
        except BaseException:
            await self.disconnect()
            raise

    async def _secure(self, connection, force_pairing: bool) -> None:
        """Encrypt with the bond if there is one, else pair (LE Secure Connections)."""
        central = connection.device
        bonded = central.keystore is not None and await central.keystore.get(str(self._peer_address))
        if bonded and not force_pairing:
            try:
                await self._request(connection.encrypt())
                return
            except (core.BaseBumbleError, hci.HCI_Error, BleakError):
                log.info("bond with %s no longer works; pairing again", self.address)
        try:
            await self._request(connection.pair())
        except (core.ProtocolError, core.BaseBumbleError, hci.HCI_Error) as exc:
            raise PairingRefused(f"{self.address} refused pairing: {exc}") from exc

    async def _discover(self, peer: Peer) -> BleakGATTServiceCollection:
        collection = BleakGATTServiceCollection()
        wanted = {u.lower() for u in self._only_services} if self._only_services else None
        for service in await self._request(peer.discover_services()):
            service_uuid = uuid_str(service.uuid)
            if wanted is not None and service_uuid not in wanted:
                continue
            bleak_service = BleakGATTService(service, service.handle, service_uuid)
            collection.add_service(bleak_service)
            for characteristic in await self._request(service.discover_characteristics()):
                properties = [name for flag, name in _PROPERTIES if characteristic.properties & flag]
                bleak_char = BleakGATTCharacteristic(characteristic, characteristic.handle,
                                                     uuid_str(characteristic.uuid), properties,
                                                     lambda: self.mtu_size - 3, bleak_service)
                collection.add_characteristic(bleak_char)
                for descriptor in await self._request(characteristic.discover_descriptors()):
                    collection.add_descriptor(BleakGATTDescriptor(descriptor, descriptor.handle,
                                                                  uuid_str(descriptor.type), bleak_char))
        return collection

    async def disconnect(self) -> None:
        connection = self._connection
        if connection is None:
            return
        self._disconnecting = True
        gone = asyncio.get_running_loop().create_future()
        connection.once("disconnection", lambda reason: gone.done() or gone.set_result(reason))
        try:
            await connection.disconnect()
            await asyncio.wait_for(gone, 5.0)
        except Exception:    # already disconnected, or the peer vanished
            log.debug("disconnect from %s: link already gone", self.address, exc_info=True)
        self._forget()

    def _forget(self) -> None:
        self._connection, self._peer, self.services = None, None, None
        self._subscribers.clear()

    def _on_disconnection(self, reason) -> None:
        unsolicited = not self._disconnecting
        self._forget()
        if unsolicited and self._disconnected_callback is not None:
            self._disconnected_callback()

    async def pair(self, *args: Any, **kwargs: Any) -> None:
        if self._connection is None:
            raise BleakError("Not connected")
        await self._secure(self._connection, force_pairing=True)

    async def unpair(self) -> None:
        central = await self.radio.central()
        if central.keystore is not None:
            try:
                await central.keystore.delete(str(self._peer_address))
            except KeyError:
                pass
        await self.disconnect()

    # -- I/O -------------------------------------------------------------------

    async def _request(self, awaitable):
        """Await a GATT/SMP/HCI operation, ending it when the link drops
        (bumble would otherwise wait out its 30 s request timeout)."""
        connection = self._connection
        if connection is None:
            raise BleakError("Not connected")
        try:
            return await connection.cancel_on_disconnection(awaitable)
        except asyncio.CancelledError:
            if self._connection is None or self._connection is not connection:
                raise BleakError(f"Not connected: {self.address} disconnected") from None
            raise
        except att.ATT_Error as exc:
            raise BleakGATTProtocolError(int(exc.error_code)) from exc

    def _gatt(self) -> Peer:
        if self._peer is None:
            raise BleakError("Not connected")
        return self._peer

    async def read_gatt_char(self, characteristic: BleakGATTCharacteristic, *, use_cached: bool = False,
                             **kwargs: Any) -> bytearray:
        return bytearray(await self._request(self._gatt().read_value(characteristic.obj)))

    async def read_gatt_descriptor(self, descriptor: BleakGATTDescriptor, *, use_cached: bool = False,
                                   **kwargs: Any) -> bytearray:
        return bytearray(await self._request(self._gatt().read_value(descriptor.obj)))

    async def write_gatt_char(self, characteristic: BleakGATTCharacteristic, data, response: bool) -> None:
        peer = self._gatt()
        if response:
            await self._request(peer.write_value(characteristic.obj, bytes(data), with_response=True))
        else:   # a Write Command has no answer to wait for
            await peer.write_value(characteristic.obj, bytes(data), with_response=False)

    async def write_gatt_descriptor(self, descriptor: BleakGATTDescriptor, data) -> None:
        await self._request(self._gatt().write_value(descriptor.obj, bytes(data), with_response=True))

    async def start_notify(self, characteristic: BleakGATTCharacteristic, callback: NotifyCallback,
                           **kwargs: Any) -> None:
        def subscriber(value: bytes) -> None:
            callback(bytearray(value))
        await self._request(self._gatt().subscribe(characteristic.obj, subscriber))
        self._subscribers[characteristic.handle] = subscriber

    async def stop_notify(self, characteristic: BleakGATTCharacteristic) -> None:
        subscriber = self._subscribers.pop(characteristic.handle, None)
        await self._request(self._gatt().unsubscribe(characteristic.obj, subscriber))
