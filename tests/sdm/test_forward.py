"""Forwarded writes go out through the bus's poller, between its reads, and their outcome comes back."""

import struct

from umodbus.client.serial.redundancy_check import add_crc

from sdm.cache import RegisterCache
from sdm.config import DENY
from sdm.forward import GATEWAY_TARGET_FAILED, ForwardedWrite
from sdm.serve import RtuSlave
from sdm.slave import Responder, ServeStats
from tests.fakes import MeterLine, bus_poller, meter_configs, virtual_meters

BAUD_CODE_ADDRESS = 0x001C


def test_a_write_is_sent_before_the_next_read_and_the_meter_takes_it():
    meters = virtual_meters({1: "sdm630"})
    line = MeterLine(meters)
    hub, poller = bus_poller({1: "sdm630"}, line)
    poller.link.open()
    poller.step()
    code_9600 = meters[1].model.setting("baud").code_for("9600")
    write = ForwardedWrite(1, BAUD_CODE_ADDRESS, list(struct.unpack(">2H", struct.pack(">f", code_9600))), "client")
    poller.writes.append(write)
    poller.step()
    assert line.requests[-1][1] == 0x10                       # the write went out next
    assert write.wait(0) == 0 and write.error is None
    assert meters[1].stored["baud"] == code_9600
    sent = len(line.requests)
    while len(line.requests) == sent:                         # the meter's pause, then reading goes on
        poller.step()
    assert line.requests[-1][1] == 0x04


def test_the_meters_refusal_and_a_write_nobody_takes_come_back_as_exception_codes():
    meters = virtual_meters({1: "sdm630"})
    hub, poller = bus_poller({1: "sdm630"}, MeterLine(meters))
    poller.link.open()
    refused = ForwardedWrite(1, 0x0100, [1, 2], "client")     # no setting there: exception 02
    poller.writes.append(refused)
    poller.step()
    assert refused.wait(0) == 0x02
    waiting = ForwardedWrite(1, 0x0100, [1, 2], "client")
    assert waiting.wait(0.01) == GATEWAY_TARGET_FAILED         # no poller took it in time


class RecordingLine(MeterLine):
    """A served RTU line: hands over one chunk of requests, records what the slave writes."""

    def __init__(self, chunk: bytes):
        super().__init__({})
        self.pending = chunk
        self.written = []
        self.is_open = True

    def write(self, data: bytes):
        self.written.append(bytes(data))


def test_the_rtu_slave_answers_fresh_units_and_stays_silent_for_stale_or_foreign_ones():
    cache = RegisterCache()
    meter = meter_configs({1: "sdm630"})[0]
    responder = Responder({3: meter}, cache, 2.0, DENY, ServeStats("rtu test"))
    cache.store(meter.bus, 1, 4, 0, list(range(10)), responder.clock())
    requests = [add_crc(struct.pack(">BBHH", unit, 4, start, 2)) for unit, start in
                ((3, 0), (3, 0x48), (9, 0), (3, 0x300))]
    line = RecordingLine(b"".join(requests))
    slave = RtuSlave(line, responder)
    while line.pending:                                       # a frame at a time, as they come
        slave.serve_chunk()
    assert line.written == [add_crc(struct.pack(">BBB2H", 3, 4, 4, 0, 1)),       # fresh: answered
                            add_crc(bytes((3, 0x84, 0x02)))]                      # no such register: 02
    assert responder.stats.refused["never_read"] == 1                             # silent, counted
