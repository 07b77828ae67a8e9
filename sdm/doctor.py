"""sdm_doctor's logic: watch and probe one bus for a while, then say what is wrong with it in plain words.

The doctor reads every meter as the gateway would (the same plan and the same
learned timing, sdm.timing), listens whenever it is not asking, and records
every exchange: the reply's bytes, its verdict, its turnaround, whether the
bus's previous exchange was with another meter, and whether it was sent at a
pause the learner was only trying out.  :func:`diagnose` then looks for the
patterns that the common wiring and setting faults leave:

=================================== ===============================================================
pattern                             what it points to
=================================== ===============================================================
bytes no request of ours caused     another master on the bus (an inverter, a wallbox, a gateway)
most replies bad, at one length;    baud rate or parity differ from the meters' (``--try-comsets``
or no reply at all                  names the setting that fits)
one id's replies overlap or fail    two meters share that id
while the others are clean
CRC errors that grow with the       noise, or a long line without termination and biasing
reply's length
timeouts only right after another   the meter needs more quiet after traffic on the bus
meter's exchange
=================================== ===============================================================

These are rules of thumb from the field, not a standard: the report says what
the evidence was, so a user can judge.  The analysis works on a recording
alone, so it is tested on recorded frame sequences as well as on live buses.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .config import MeterConfig
from .framing import rtu
from .plan import Block, make_block, plan, request_overhead_chars, wire_time
from .timing import MIN_TIMEOUT, MeterTiming, percentile
from .transport import Line, LineCost, comset, comset_label, silence_time

OK, OVERLAP, FOREIGN = "ok", "overlap", "foreign"
BAD_REPLY_KINDS = ("crc", "short", "malformed", OVERLAP)
LISTEN_EVERY = 5.0          # s between two listening windows
LISTEN_TIME = 0.5           # s of listening in each
TIMELINE_SLOTS = 10         # the report's error counts over time


@dataclass
class Exchange:
    """One request of the doctor's and what came back."""

    at: float                   # s since the watch began
    slave: int
    expected: int               # bytes a good reply has
    reply: bytes
    kind: str                   # OK, an error kind of sdm.framing.rtu, OVERLAP or FOREIGN
    turnaround: Optional[float]
    after_other: bool = False   # the bus's previous exchange was with another meter
    trial: bool = False         # sent at a pause the learner was trying out


@dataclass
class Stray:
    """Bytes that arrived while no request of ours was waiting for an answer."""

    at: float
    data: bytes


@dataclass
class Recording:
    meters: Sequence[MeterConfig]
    char_time: float
    duration: float = 0.0
    exchanges: List[Exchange] = field(default_factory=list)
    strays: List[Stray] = field(default_factory=list)
    timings: Dict[int, MeterTiming] = field(default_factory=dict)


@dataclass
class Finding:
    code: str                   # another_master, comset, duplicate_id, noise, needs_pause, scattered, silent
    text: str


FrameSink = Callable[[float, bytes, bool, str], None]   # (wall time, bytes, inbound, verdict)


# -- reading one reply raw ------------------------------------------------------------------------

def classify(request: bytes, reply: bytes) -> str:
    """The verdict on the bytes that came back for ``request``."""
    slave, fc = request[0], request[1]
    expected = rtu.reply_bytes(int.from_bytes(request[4:6], "big"))
    if not reply:
        return rtu.NoReply.kind
    if reply[0] != slave:
        return FOREIGN if rtu.crc_ok(reply) else rtu.MalformedReply.kind
    if len(reply) >= 2 and reply[1] == fc | 0x80:
        size = rtu.EXCEPTION_BYTES
    elif len(reply) >= 3 and (reply[1] != fc or reply[2] != expected - rtu.REPLY_OVERHEAD):
        return rtu.MalformedReply.kind
    else:
        size = expected
    if len(reply) < size:
        return rtu.ShortReply.kind
    if len(reply) > size:
        return OVERLAP
    if not rtu.crc_ok(reply):
        return rtu.CRCError.kind
    return rtu.ExceptionReply.kind if size == rtu.EXCEPTION_BYTES else OK


def read_raw(line: Line, request: bytes, timeout: float) -> Tuple[bytes, Optional[float]]:
    """Send ``request`` and collect every byte that follows until the line falls quiet: the reply
    and anything running into it.  Also the turnaround (end of request to first byte)."""
    line.write(request)
    sent = time.monotonic() + line.char_time * len(request)
    expected = rtu.reply_bytes(int.from_bytes(request[4:6], "big"))
    deadline = sent + timeout + line.char_time * expected
    head = line.read(1, sent + timeout + line.char_time)
    if not head:
        return b"", None
    turnaround = max(0.0, time.monotonic() - sent)
    data = head + line.read(expected - 1, deadline)
    while True:
        more = line.read(256, time.monotonic() + silence_time(line.char_time) + 2 * line.char_time)
        if not more:
            return data, turnaround
        data += more


# -- watching a bus -------------------------------------------------------------------------------

class Doctor:
    """Reads ``meters`` on ``line`` as the gateway would, listening in between, and records it all."""

    def __init__(self, line: Line, meters: Sequence[MeterConfig], timeout: float = 0.3,
                 on_frame: Optional[FrameSink] = None, sleep: Callable[[float], None] = time.sleep):
        if not meters:
            raise ValueError("no meter to examine: give -d TYPE:ID,... or --config")
        self.line = line
        self.meters = list(meters)
        self.timeout = timeout
        self.on_frame = on_frame
        self.sleep = sleep
        floor = MIN_TIMEOUT + silence_time(line.char_time)
        self.timings = {m.device_id: MeterTiming(m.model.pause, timeout, floor, m.pause) for m in self.meters}
        self.blocks = {m.device_id: self._blocks(m) for m in self.meters}
        self.turn = {m.device_id: 0 for m in self.meters}
        self.ready = {m.device_id: 0.0 for m in self.meters}
        self.ended: Dict[int, float] = {}

    def _blocks(self, meter: MeterConfig) -> List[Block]:
        """The gateway's plan, and the short probe request: replies of several lengths."""
        model = meter.model
        overhead = request_overhead_chars(LineCost(self.line.char_time), model.pause)
        return plan(model.registers, model.max_registers, overhead) + [make_block([model.register(model.probe)])]

    def watch(self, duration: float, progress: Callable[[float], None] = lambda share: None) -> Recording:
        """Probe and listen for ``duration`` seconds; ``progress`` hears the share done (0..1)."""
        recording = Recording(self.meters, self.line.char_time, timings=self.timings)
        start = time.monotonic()
        listen_due = start + LISTEN_EVERY / 2
        previous: Optional[int] = None
        while (now := time.monotonic()) < start + duration:
            if now >= listen_due:
                self._listen(recording, start, min(start + duration, now + LISTEN_TIME))
                listen_due = time.monotonic() + LISTEN_EVERY
                continue
            meter = min(self.meters, key=lambda m: self.ready[m.device_id])
            wait_until = min(self.ready[meter.device_id], start + duration)
            if wait_until > now:
                self._listen(recording, start, wait_until)
                continue
            self._listen(recording, start, now)          # what came in since: not ours
            recording.exchanges.append(self._exchange(meter, start, previous))
            previous = meter.device_id
            progress(min(1.0, (time.monotonic() - start) / duration))
        recording.duration = time.monotonic() - start
        return recording

    def _listen(self, recording: Recording, start: float, until: float) -> None:
        while True:
            data = self.line.read(256, until)
            if not data:
                return
            recording.strays.append(Stray(time.monotonic() - start, data))
            self._frame(data, True, "stray: no request of ours")

    def _exchange(self, meter: MeterConfig, start: float, previous: Optional[int]) -> Exchange:
        slave = meter.device_id
        timing = self.timings[slave]
        blocks = self.blocks[slave]
        block = blocks[self.turn[slave] % len(blocks)]
        self.turn[slave] += 1
        request = rtu.build_request(slave, block.fc, block.start, block.count)
        began = time.monotonic()
        gap = None if slave not in self.ended else began - self.ended[slave]
        trial = timing.pause < timing.good
        self._frame(request, False, "request")
        reply, turnaround = read_raw(self.line, request, timing.timeout)
        kind = classify(request, reply)
        if reply:
            self._frame(reply, True, kind)
        ended = self.ended[slave] = time.monotonic()
        if kind == OK:
            timing.answered(turnaround, gap, ended)
        else:
            timing.failed(kind, gap, ended)
        self.ready[slave] = ended + timing.pause
        return Exchange(began - start, slave, rtu.reply_bytes(block.count), reply, kind,
                        turnaround, previous is not None and previous != slave, trial)

    def _frame(self, data: bytes, inbound: bool, verdict: str) -> None:
        if self.on_frame is not None:
            self.on_frame(time.time(), data, inbound, verdict)


def probe_comsets(open_line: Callable[[int], Line], numbers: Sequence[int], meters: Sequence[MeterConfig],
                  timeout: float = 0.3) -> Dict[int, List[int]]:
    """For each -c number, the ids whose probe got a good reply (two tries each)."""
    answered: Dict[int, List[int]] = {}
    for number in numbers:
        line = open_line(number)
        try:
            ids = []
            for meter in meters:
                reg = meter.model.register(meter.model.probe)
                request = rtu.build_request(meter.device_id, reg.fc, reg.address, reg.width)
                for _ in range(2):
                    if classify(request, read_raw(line, request, timeout)[0]) == OK:
                        ids.append(meter.device_id)
                        break
                    line.settle(quiet=0.02, limit=timeout)
            answered[number] = ids
        finally:
            close = getattr(line, "close", None)
            if close is not None:
                close()
    return answered


# -- what the recording says ----------------------------------------------------------------------

def _rate(exchanges: Sequence[Exchange], kinds: Sequence[str]) -> float:
    return sum(e.kind in kinds for e in exchanges) / len(exchanges) if exchanges else 0.0


def _counted(exchanges: Sequence[Exchange]) -> List[Exchange]:
    """Exchanges that say something about the bus: not the learner's own pause trials."""
    return [e for e in exchanges if not e.trial]


def _by_length(exchanges: Sequence[Exchange]) -> Tuple[List[Exchange], List[Exchange]]:
    """The exchanges with the shorter and with the longer replies (split at the median length)."""
    lengths = sorted({e.expected for e in exchanges})
    if len(lengths) < 2:
        return list(exchanges), []
    cut = lengths[len(lengths) // 2]
    return [e for e in exchanges if e.expected < cut], [e for e in exchanges if e.expected >= cut]


def grows_with_length(exchanges: Sequence[Exchange], kinds: Sequence[str] = ("crc",)) -> bool:
    short, long = _by_length(exchanges)
    rate_short, rate_long = _rate(short, kinds), _rate(long, kinds)
    return bool(long) and rate_long >= 0.02 and rate_long > 1.5 * rate_short


def _another_master(rec: Recording, exchanges: Sequence[Exchange]) -> Optional[Finding]:
    stray_bytes = sum(len(s.data) for s in rec.strays)
    foreign = sum(e.kind == FOREIGN for e in exchanges)
    if stray_bytes < 4 and foreign < 2:
        return None
    return Finding("another_master", (
        f"{stray_bytes} bytes in {len(rec.strays)} bursts came while no request of ours was waiting, and "
        f"{foreign} replies came from an id we did not ask: another master is on this bus (an inverter, a "
        f"wallbox, a second gateway). Two masters collide; give the meters to one of them, or put sdm on an "
        f"adapter and bus of its own."))


def _comset(rec: Recording, exchanges: Sequence[Exchange],
            comsets: Optional[Dict[int, List[int]]]) -> Optional[Finding]:
    """Most replies bad on every meter alike (or at one length, or none at all): the line setting."""
    if not exchanges:
        return None
    replies = [e for e in exchanges if e.reply]
    good = sum(e.kind == OK for e in exchanges)
    if good / len(exchanges) >= 0.5:
        return None
    lengths = Counter(len(e.reply) for e in replies if e.kind != OK)
    fixed = bool(lengths) and lengths.most_common(1)[0][1] >= 0.6 * sum(lengths.values())
    everywhere = all(_rate([e for e in exchanges if e.slave == m.device_id], BAD_REPLY_KINDS + (FOREIGN,)) >= 0.5
                     for m in rec.meters)
    if replies and not (fixed or everywhere):
        return None
    if not replies:
        seen = "no meter answered at all"
    elif fixed:
        seen = f"the replies are garbage, mostly {lengths.most_common(1)[0][0]} bytes long"
    else:
        seen = "the replies of every meter are garbled"
    text = f"{seen} ({good} good of {len(exchanges)}): the baud rate or parity differ from the meters' setting"
    fitting = [number for number, ids in (comsets or {}).items() if ids]
    if fitting:
        text += "; they answer at " + ", ".join(comset_label(comset(n)) for n in fitting)
    elif comsets is not None:
        text += "; no other comset got an answer either: check the wiring (A/B swapped?) and the ids"
    else:
        text += " (or the wiring or ids are wrong); run again with --try-comsets to find the setting"
    return Finding("comset", text + ".")


def _duplicate_ids(rec: Recording, exchanges: Sequence[Exchange]) -> List[Finding]:
    findings = []
    for meter in rec.meters:
        own = [e for e in exchanges if e.slave == meter.device_id]
        others = [e for e in exchanges if e.slave != meter.device_id]
        overlaps = sum(e.kind == OVERLAP for e in own)
        bad = _rate(own, BAD_REPLY_KINDS)
        clean_elsewhere = not others or _rate(others, BAD_REPLY_KINDS) < 0.05
        if (overlaps >= 2 or bad >= 0.25) and clean_elsewhere and not grows_with_length(own, BAD_REPLY_KINDS):
            findings.append(Finding("duplicate_id", (
                f"replies to id {meter.device_id} overlap or fail ({overlaps} overlapping, {bad:.0%} bad) while "
                f"other ids are clean: two meters share id {meter.device_id}. Give one of them another id "
                f"(sdm_config, with only that meter on the bus).")))
    return findings


def _noise(exchanges: Sequence[Exchange]) -> Optional[Finding]:
    crc = sum(e.kind == "crc" for e in exchanges)
    if crc < 3 or not grows_with_length(exchanges):
        return None
    short, long = _by_length(exchanges)
    return Finding("noise", (
        f"{crc} CRC errors, more on long replies ({_rate(long, ('crc',)):.0%}) than on short ones "
        f"({_rate(short, ('crc',)):.0%}): noise, or a long line without termination (120 ohm at both ends) "
        f"and biasing. Use twisted pair, terminate both ends, keep it away from power cables."))


def _needs_pause(rec: Recording, exchanges: Sequence[Exchange]) -> List[Finding]:
    findings = []
    for meter in rec.meters:
        own = [e for e in exchanges if e.slave == meter.device_id]
        after_other = [e for e in own if e.after_other]
        after_self = [e for e in own if not e.after_other]
        misses = sum(e.kind == "timeout" for e in after_other)
        rate_other, rate_self = _rate(after_other, ("timeout",)), _rate(after_self, ("timeout",))
        if misses >= 3 and rate_other >= 0.10 and rate_self <= rate_other / 4:
            findings.append(Finding("needs_pause", (
                f"meter {meter.name} (id {meter.device_id}) misses {rate_other:.0%} of the requests that come "
                f"right after another meter's answer and {rate_self:.0%} of the others: it needs more quiet "
                f"after traffic on the bus. Give it a longer pause (pause = ... in the config, or --pause).")))
    return findings


def diagnose(rec: Recording, comsets: Optional[Dict[int, List[int]]] = None) -> List[Finding]:
    """What the recording points to, most fundamental first; empty for a clean bus."""
    exchanges = _counted(rec.exchanges)
    # Another master's traffic garbles our replies as a wrong line setting would; its bytes between
    # our exchanges tell the two apart, so it is looked for first.
    master = _another_master(rec, exchanges)
    wrong_line = None if master else _comset(rec, exchanges, comsets)
    if wrong_line is not None:
        return [wrong_line]
    findings = [master] if master else []
    findings += _duplicate_ids(rec, exchanges)
    noise = _noise(exchanges)
    if noise is not None and not any(f.code == "duplicate_id" for f in findings):
        findings.append(noise)
    findings += _needs_pause(rec, exchanges)
    errors = [e for e in exchanges if e.kind not in (OK, rtu.ExceptionReply.kind)]
    if not findings and errors:
        kinds = Counter(e.kind for e in errors)
        findings.append(Finding("scattered", (
            f"{len(errors)} failed exchanges of {len(exchanges)} ({dict(kinds)}) without a pattern that points "
            f"to one cause; watch longer (--duration) or look at the capture (--capture).")))
    return findings


# -- the report -----------------------------------------------------------------------------------

def _ms(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value * 1000, 1)


def meter_report(rec: Recording, meter: MeterConfig) -> Dict[str, Any]:
    """One meter's figures: turnaround, the timing the gateway would use, readings per second, errors."""
    timing = rec.timings[meter.device_id]
    own = [e for e in rec.exchanges if e.slave == meter.device_id]
    turnarounds = [e.turnaround for e in own if e.turnaround is not None and e.kind == OK]
    typical = percentile(turnarounds, 0.5) or 0.0
    model = meter.model
    overhead = request_overhead_chars(LineCost(rec.char_time), timing.pause, typical)
    blocks = plan(model.registers, model.max_registers, overhead)
    cycle = wire_time(blocks, rec.char_time) + len(blocks) * (typical + timing.pause)
    slot = max(rec.duration / TIMELINE_SLOTS, 1e-9)
    timeline = [0] * TIMELINE_SLOTS
    for e in own:
        if e.kind not in (OK, rtu.ExceptionReply.kind):
            timeline[min(TIMELINE_SLOTS - 1, int(e.at / slot))] += 1
    return {
        "Name": meter.name, "Id": meter.device_id, "Type": meter.type_name.lower(),
        "Exchanges": len(own), "Errors": dict(Counter(e.kind for e in own if e.kind != OK)),
        "ErrorsOverTime": timeline,
        "TurnaroundMs": {"p50": _ms(percentile(turnarounds, 0.5)), "p95": _ms(percentile(turnarounds, 0.95)),
                         "max": _ms(max(turnarounds, default=None))},
        "PauseMs": _ms(timing.pause), "TimeoutMs": _ms(timing.timeout), "Requests": len(blocks),
        "CycleMs": _ms(cycle), "ReadingsPerSecond": round(1 / cycle, 2) if cycle > 0 else None,
    }


def report(rec: Recording, findings: Sequence[Finding]) -> Dict[str, Any]:
    """The whole result, as ``--json`` prints it."""
    meters = [meter_report(rec, meter) for meter in rec.meters]
    busy = sum(m["CycleMs"] - m["Requests"] * (m["PauseMs"] or 0) for m in meters)
    bus_cycle = max([busy] + [m["CycleMs"] for m in meters])   # pauses hide behind other meters' traffic
    return {
        "DurationSeconds": round(rec.duration, 1),
        "Exchanges": len(rec.exchanges),
        "StrayBytes": sum(len(s.data) for s in rec.strays),
        "Meters": meters,
        "Bus": {"CycleMs": round(bus_cycle, 1), "ReadingsPerSecond": round(1000 / bus_cycle, 2) if bus_cycle else None},
        "Findings": [{"Code": f.code, "Text": f.text} for f in findings],
        "Verdict": "no problem found" if not findings else f"{len(findings)} problem(s) found",
    }


def format_report(result: Dict[str, Any]) -> str:
    """The report for a person: per meter, the bus, and the findings in words."""
    out = [f"Watched the bus for {result['DurationSeconds']} s: {result['Exchanges']} exchanges, "
           f"{result['StrayBytes']} stray bytes."]
    for m in result["Meters"]:
        t = m["TurnaroundMs"]
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(m["Errors"].items())) or "none"
        out.append(f"  {m['Name']} ({m['Type']}:{m['Id']}): turnaround p50 {t['p50']} / p95 {t['p95']} / max "
                   f"{t['max']} ms; would use pause {m['PauseMs']} ms, timeout {m['TimeoutMs']} ms: "
                   f"{m['Requests']} requests, {m['ReadingsPerSecond']} readings/s alone; errors: {errors}; "
                   f"over time: {' '.join(map(str, m['ErrorsOverTime']))}")
    out.append(f"  the bus: {result['Bus']['ReadingsPerSecond']} complete readings/s of every meter together")
    if not result["Findings"]:
        out.append("No problem found.")
    for finding in result["Findings"]:
        out.append(f"* {finding['Text']}")
    return "\n".join(out)
