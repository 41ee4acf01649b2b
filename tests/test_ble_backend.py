"""The bleak backend for the emulated radio, through bleak's own public API:
BleakScanner and BleakClient with ``backend=``, and bleak-retry-connector's
``establish_connection`` -- the calls the reader plugin makes in production."""
from __future__ import annotations

import asyncio

import pytest
from bleak import BleakClient, BleakScanner
from bleak.exc import BleakError, BleakGATTProtocolError
from bleak_retry_connector import establish_connection

from kiosk_builtins.ble_reader import messages as m
from kiosk_builtins.ble_reader.bumble_backend import backends_for
from kiosk_builtins.ble_reader.emulated_radio import EmulatedRadio
from kiosk_builtins.ble_reader.emulated_reader import READER_ADDRESS, Behaviour, EmulatedReader
from kiosk_builtins.ble_reader.errors import PairingRefused, is_pairing_refusal
from kiosk_builtins.ble_reader.framing import Reassembler, encode_frame, split_segments
from kiosk_builtins.ble_reader.profile import COMMAND_UUID, EVENT_UUID, SERVICE_UUID


def on_radio(scenario, **behaviour):
    """Run ``scenario(reader, Scanner, Client)`` on a fresh radio with one emulated reader."""
    async def main():
        radio = EmulatedRadio()
        reader = EmulatedReader(radio, Behaviour(**behaviour))
        await reader.switch_on()
        scanner, client = backends_for(radio)
        try:
            return await scenario(reader, scanner, client)
        finally:
            await reader.switch_off()
    return asyncio.run(main())


def test_scanning_sees_the_reader_advertise_the_service():
    async def scenario(reader, Scanner, Client):
        found = await BleakScanner.discover(timeout=0.2, return_adv=True, backend=Scanner)
        device, adv = found[READER_ADDRESS]
        assert device.name == adv.local_name == "Emulated card reader"
        assert adv.service_uuids == [SERVICE_UUID] and adv.rssi < 0
        assert await BleakScanner.find_device_by_filter(lambda d, a: True, timeout=0.2, backend=Scanner,
                                                        service_uuids=["0000180f-0000-1000-8000-00805f9b34fb"]) is None
        assert (await BleakScanner.find_device_by_address(READER_ADDRESS, timeout=1, backend=Scanner)).address \
            == READER_ADDRESS
    on_radio(scenario)


def test_a_paired_client_discovers_writes_and_gets_notified():
    async def scenario(reader, Scanner, Client):
        device = await BleakScanner.find_device_by_address(READER_ADDRESS, timeout=1, backend=Scanner)
        async with BleakClient(device, backend=Client, pair=True) as client:
            assert client.is_connected and client.mtu_size == 247 and client.name == "Emulated card reader"
            service = client.services.get_service(SERVICE_UUID)
            command, event = service.get_characteristic(COMMAND_UUID), service.get_characteristic(EVENT_UUID)
            assert sorted(command.properties) == ["write", "write-without-response"]
            assert event.properties == ["notify"] and event.get_descriptor("00002902-0000-1000-8000-00805f9b34fb")
            assert command.max_write_without_response_size == 244
            answers, reassembler = asyncio.Queue(), Reassembler()
            await client.start_notify(event, lambda char, data: answers.put_nowait(reassembler.feed(data)))
            for response in (False, True):
                for segment in split_segments(encode_frame(m.to_frame(m.GetInfo(), 9)), 10):
                    await client.write_gatt_char(COMMAND_UUID, segment, response=response)
                frame = await asyncio.wait_for(answers.get(), 2)
                assert frame.seq == 9 and m.parse(frame).name == "Emulated card reader"
            await client.stop_notify(event)
            assert await client.read_gatt_char(event) == bytearray()
    on_radio(scenario)


def test_without_pairing_the_reader_refuses_commands():
    async def scenario(reader, Scanner, Client):
        device = await BleakScanner.find_device_by_address(READER_ADDRESS, timeout=1, backend=Scanner)
        async with BleakClient(device, backend=Client, pair=False) as client:
            with pytest.raises(BleakGATTProtocolError) as err:
                await client.write_gatt_char(COMMAND_UUID, b"\xc0", response=True)
            assert err.value.code == 0x05        # Insufficient Authentication
            with pytest.raises(BleakGATTProtocolError) as err:
                await client.start_notify(EVENT_UUID, lambda char, data: None)
            assert err.value.code == 0x05
        assert reader.frames_received == [] and reader.bad_frames_received == 0
    on_radio(scenario)


def test_switch_off_calls_the_disconnected_callback_and_bonds_survive():
    async def scenario(reader, Scanner, Client):
        device = await BleakScanner.find_device_by_address(READER_ADDRESS, timeout=1, backend=Scanner)
        dropped = asyncio.Event()
        client = BleakClient(device, lambda c: dropped.set(), backend=Client, pair=True, timeout=0.5)
        await client.connect()
        await reader.switch_off()
        await asyncio.wait_for(dropped.wait(), 2)
        assert not client.is_connected
        with pytest.raises(BleakError):
            await client.write_gatt_char(COMMAND_UUID, b"\xc0", response=True)
        with pytest.raises(TimeoutError, match="did not answer within 0.5 s"):
            await client.connect()
        await reader.switch_on()
        await client.connect()                     # encrypted with the bond: no new passkey
        assert client.is_connected and reader.radio.passkeys.empty()
        dropped.clear()
        await client.disconnect()
        await asyncio.sleep(0.05)
        assert not dropped.is_set()                # only a drop the kiosk did not ask for is reported
    on_radio(scenario)


def test_a_refused_pairing_is_told_apart_through_establish_connection():
    async def scenario(reader, Scanner, Client):
        device = await BleakScanner.find_device_by_address(READER_ADDRESS, timeout=1, backend=Scanner)
        with pytest.raises(BleakError) as err:
            await establish_connection(BleakClient, device, "reader", max_attempts=1, pair=True, backend=Client)
        assert is_pairing_refusal(err.value) and not is_pairing_refusal(BleakError("out of range"))
        assert isinstance(err.value.__cause__, PairingRefused)
    on_radio(scenario, refuse_pairing=True)
