"""The simulator's broken device: ids that answer any request with random bytes."""

import random

from sdm.framing.rtu import build_request, crc_ok
from sdm.meters.registry import lookup
from simulator.cli import main
from simulator.meters import VirtualMeter
from simulator.physics import Physics
from simulator.server import SlaveLoop, garbage_reply


class RecordingLine:
    def __init__(self):
        self.sent = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)


def test_garbage_is_never_a_valid_frame():
    rng = random.Random(3)
    replies = [garbage_reply(rng) for _ in range(2000)]
    assert not any(crc_ok(reply) for reply in replies)
    assert len(set(replies)) > 1900 and {len(r) for r in replies} == set(range(1, 13))


def test_only_the_garbage_id_answers_garbage():
    line = RecordingLine()
    meter = VirtualMeter(lookup("sdm630"), 1, Physics(seed=1))
    loop = SlaveLoop(line, {1: meter}, garbage=[9], seed=5)
    for slave in (9, 1, 9, 3):
        loop.handle(build_request(slave, 0x04, 0, 2), now=float(slave))
    assert len(line.sent) == 3                    # id 3 stays silent
    garbage_1, good, garbage_2 = line.sent
    assert crc_ok(good) and good[:3] == bytes([1, 4, 4])
    assert not crc_ok(garbage_1) and not crc_ok(garbage_2) and garbage_1 != garbage_2


def test_a_garbage_id_cannot_also_be_a_meter(tmp_path, capsys):
    assert main(["--link", str(tmp_path / "tty"), "-d", "sdm630:1", "--garbage-id", "1"]) == 2
    assert "--garbage-id 1 is also a meter" in capsys.readouterr().err
    assert not (tmp_path / "tty").exists()
