"""What a websocket client may send, and who may connect: RFC 6455 close codes, budgets, Origin, caps.

Frames are written by hand on a raw socket (websocket-client refuses to send broken ones).
"""

import base64
import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.api import make_app
from sdm.compat.geventwebsocket import ClientFrame
from sdm.config import HttpConfig
from sdm.hub import Hub, MeterConfig
from sdm.meters.registry import lookup
from sdm.server import make_server, origin_allowed
from sdm.streams import Streams
from sdm.streams.ws import MESSAGE_TOO_BIG, POLICY_VIOLATION, PROTOCOL_ERROR, TRY_AGAIN_LATER, FrameRules, WsSettings

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = TEXT, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    key = os.urandom(4) if mask else b""
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if mask else payload
    bit = 0x80 if mask else 0
    length = bytes([bit | len(payload)]) if len(payload) < 126 else bytes([bit | 126]) + struct.pack("!H", len(payload))
    return bytes([(0x80 if fin else 0) | rsv << 4 | opcode]) + length + key + body


class RawClient:
    """A websocket client on a plain socket: handshake, raw frames out, parsed frames in."""

    def __init__(self, port: int, origin: str = "", host: str = ""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        key = base64.b64encode(os.urandom(16)).decode()
        extra = f"Origin: {origin}\r\n" if origin else ""
        self.sock.sendall((f"GET /ws HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"{extra}\r\n").encode())
        self.rfile = self.sock.makefile("rb")
        self.status = int(self.rfile.readline().split()[1])
        while self.rfile.readline() not in (b"\r\n", b""):
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_frame(self):
        first, second = self.rfile.read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self.rfile.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", self.rfile.read(8))[0]
        return first & 0x0F, self.rfile.read(length)

    def close_code(self) -> int:
        """The code of the server's close frame; frames before it skipped."""
        while True:
            opcode, payload = self.next_frame()
            if opcode == CLOSE:
                assert self.rfile.read(1) == b"", "the server closes the connection after its close frame"
                return struct.unpack("!H", payload[:2])[0]

    def pong_for(self, payload: bytes) -> bool:
        while True:
            opcode, got = self.next_frame()
            if opcode == PONG:
                return got == payload

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


@pytest.fixture
def gateway(request):
    """An in-process server with the [http] limits of ``request.param`` (a dict)."""
    limits = HttpConfig(**getattr(request, "param", {}))
    hub = Hub([MeterConfig(1, "SDM630", lookup("sdm630"), "Instrument1")])
    streams = Streams(hub, WsSettings(max_clients=limits.max_ws_clients, per_address=limits.ws_per_address,
                                      frames_per_second=2.0, frame_burst=10), status_interval=3600)
    server = make_server(streams.mount(make_app(hub)), "127.0.0.1:0", limits=limits)
    server.start()
    yield server.address[1]
    streams.stop()
    server.stop(timeout=1)


@pytest.mark.parametrize("bad,code", [
    (client_frame(b"hi", mask=False), PROTOCOL_ERROR),
    (client_frame(b"hi", rsv=0b100), PROTOCOL_ERROR),
    (client_frame(b"hi", rsv=0b001), PROTOCOL_ERROR),
    (client_frame(b"hi", opcode=0x3), PROTOCOL_ERROR),
    (client_frame(b"hi", opcode=0xB), PROTOCOL_ERROR),
    (client_frame(b"hi", opcode=CONTINUATION), PROTOCOL_ERROR),
    (client_frame(b"a", fin=False) + client_frame(b"b", opcode=TEXT), PROTOCOL_ERROR),
    (client_frame(b"", opcode=PING, fin=False), PROTOCOL_ERROR),
    (client_frame(b"x" * 200, opcode=PING), PROTOCOL_ERROR),
    (client_frame(b"x" * 5000), MESSAGE_TOO_BIG),
    (client_frame(b"ping", opcode=PING) * 50, POLICY_VIOLATION),     # a ping flood
    (client_frame(b"hello") * 50, POLICY_VIOLATION),                 # a text flood
])
def test_a_broken_or_abusive_client_is_closed_with_rfc6455s_code(gateway, bad, code):
    client = RawClient(gateway)
    assert client.status == 101
    client.send(bad)
    assert client.close_code() == code
    client.close()


def test_fragmented_messages_and_a_few_pings_are_fine(gateway):
    client = RawClient(gateway)
    client.send(client_frame(b"frag", fin=False) + client_frame(b"ment", opcode=CONTINUATION, fin=False)
                + client_frame(b"ed", opcode=CONTINUATION) + client_frame(b"are you there", opcode=PING))
    assert client.pong_for(b"are you there")
    client.close()


@pytest.mark.parametrize("gateway", [{"ws_per_address": 2}], indirect=True)
def test_one_address_holds_at_most_its_share_of_websockets(gateway):
    first, second = RawClient(gateway), RawClient(gateway)
    third = RawClient(gateway)
    assert third.status == 101 and third.close_code() == TRY_AGAIN_LATER
    first.close()
    third.close()
    fourth = RawClient(gateway)        # a slot came free
    fourth.send(client_frame(b"still here", opcode=PING))
    assert fourth.pong_for(b"still here")
    second.close()
    fourth.close()


@pytest.mark.parametrize("gateway", [{"ws_origins": ("http://dashboard.lan:3000",)}], indirect=True)
@pytest.mark.parametrize("origin,host,status", [
    ("", "", 101),                                       # not a browser
    ("http://127.0.0.1:{port}", "", 101),                # the gateway's own page
    ("http://gateway.lan", "gateway.lan:80", 101),       # default port on both sides
    ("http://dashboard.lan:3000", "", 101),              # configured
    ("http://evil.example", "", 403),
    ("http://127.0.0.1:1", "", 403),                     # another port of the same host
    ("null", "", 403),
    ("https://127.0.0.1:{port}", "127.0.0.1", 403),
])
def test_only_the_gateways_own_pages_and_configured_origins_open_the_stream(gateway, origin, host, status):
    client = RawClient(gateway, origin.replace("{port}", str(gateway)), host)
    assert client.status == status
    client.close()


@given(origin=st.text(max_size=40), host=st.text(max_size=40))
def test_origin_checks_never_raise(origin, host):
    assert origin_allowed(origin, host, ()) in (True, False)
    assert origin_allowed(origin, host, ("*",)) is True


def frames():
    return st.builds(ClientFrame, opcode=st.sampled_from([0, 1, 2, 3, 8, 9, 10, 11]), payload=st.just(b""),
                     fin=st.booleans(), rsv=st.integers(0, 7), masked=st.booleans())


@settings(max_examples=300)
@given(sent=st.lists(st.tuples(frames(), st.floats(0, 2)), max_size=60))
def test_frame_rules_pass_only_valid_frames_within_the_budget(sent):
    now = [0.0]
    rules = FrameRules(rate=2.0, burst=5, clock=lambda: now[0])
    in_message = False
    passed = []
    for got, pause in sent:
        now[0] += pause
        verdict = rules.judge(got)
        valid = got.masked and not got.rsv and got.opcode in (0, 1, 2, 8, 9, 10) and (
            got.opcode >= 8 or (got.opcode == 0) == in_message)
        if not valid:
            assert verdict is not None and verdict[0] == PROTOCOL_ERROR
            return
        if verdict is not None:
            assert verdict[0] == POLICY_VIOLATION
            # over budget: more than the burst plus the rate since the start
            assert len(passed) + 1 > 5 + 2.0 * (now[0] - (passed[0] if passed else now[0])) - 1e-9
            return
        passed.append(now[0])
        if got.opcode < 8:
            in_message = not got.fin
    assert len(passed) <= 5 + 2.0 * (now[0] - (passed[0] if passed else 0.0)) + 1e-9
