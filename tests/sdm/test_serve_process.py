"""The RTU slave's helper process: its message framing and the counters it hands back.

The helper itself is driven end to end in tests/e2e/test_share.py (pymodbus as the RTU master,
a killed helper started again, writes forwarded through the gateway)."""

import os

from gevent import monkey
from hypothesis import given, settings
from hypothesis import strategies as st

from sdm.serve_process import encode, receive
from sdm.slave import REASONS, ServeStats

MESSAGES = st.tuples(st.sampled_from(["block", "stats", "write", "written"]),
                     st.text(max_size=20), st.integers(0, 247),
                     st.lists(st.integers(0, 0xFFFF), max_size=125), st.floats(allow_nan=False))


close = monkey.get_original("os", "close")    # gevent's waits for its loop, which a blocked read never turns


@settings(max_examples=50, deadline=None)
@given(st.lists(MESSAGES, max_size=20))
def test_messages_cross_a_pipe_whole_and_in_order(messages):
    inbox, outbox = os.pipe()
    try:
        for message in messages:         # at most ~20 KB: the pipe holds them all
            os.write(outbox, encode(message))
        got = [receive(inbox) for _ in messages]
        close(outbox)
        outbox = -1
        assert got == messages
        assert receive(inbox) is None            # the other side closed: the end, not an error
    finally:
        close(inbox)
        if outbox >= 0:
            close(outbox)


def test_a_block_message_fits_in_one_atomic_pipe_write():
    """The bus threads write blocks to the helper concurrently: each must stay under PIPE_BUF."""
    biggest = encode(("block", "a-bus-name-" * 6, 247, 4, 0xFFFF, tuple([0xFFFF] * 125), 1e9))
    assert len(biggest) < 4096


@given(requests=st.lists(st.one_of(st.none(), st.sampled_from(REASONS),
                                   st.floats(0, 10, allow_nan=False)), max_size=30))
def test_restored_counters_snapshot_as_the_original(requests):
    original = ServeStats("rtu /dev/x")
    for request in requests:
        if isinstance(request, str):
            original.refuse(request)
        else:
            original.answer(request)
    copy = ServeStats("rtu /dev/x")
    copy.restore(original.snapshot())
    assert copy.snapshot() == original.snapshot()
    copy.answer(None)
    assert copy.snapshot()["Requests"] == original.snapshot()["Requests"] + 1


def test_without_permission_for_real_time_the_helper_says_so_and_runs_normally(monkeypatch, caplog):
    from sdm import serve_process

    def refused(*args):
        raise PermissionError(1, "Operation not permitted")
    monkeypatch.setattr(serve_process.os, "sched_setscheduler", refused)
    caplog.set_level("INFO")
    serve_process.raise_priority("rtu /dev/ttyUSB1")
    assert "serve rtu /dev/ttyUSB1: normal scheduling (real-time priority not allowed" in caplog.text
