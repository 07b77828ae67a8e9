"""Meter configuration: read a meter's identity and communication settings, and change them safely.

A wrong write can leave a meter at an id or line setting nobody knows, so
every step is guarded: only settings the model's table marks writable, only
codes the vendor lists, never an id another device answers to, never a line
setting the gateway cannot speak (its -c table), one parameter per FC 16
write (as the Eastron documents ask), and afterwards a read-back.  Whenever
the outcome is in doubt the user is told where to look for the meter: its
old and its new id and line setting.

The tables in sdm/meters say what each model has; this module only follows
them.  ``sdm.cli.config`` parses arguments and wires a serial port to it.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, TextIO

from serial import PARITY_EVEN, PARITY_NONE

from .detect import Scanner
from .framing import rtu
from .framing.rtu import RtuLink
from .meters.eastron import METER_CODE_ADDRESS
from .meters.model import AT_ONCE, READ_HOLDING, Identity, MeterModel, Setting
from .meters.registry import MODELS, lookup, parse_slave_id
from .transport import COMSETS, Comset, Transport, comset_label, comset_number

OK, REFUSED, BAD_INPUT = 0, 1, 2

PARITY_WORDS = {"N1": "no parity, 1 stop bit", "E1": "even parity, 1 stop bit",
                "O1": "odd parity, 1 stop bit", "N2": "no parity, 2 stop bits"}
# What the gateway's serial line (and so -c) can speak: parity code -> pyserial parity.
LINE_PARITY = {"N1": PARITY_NONE, "E1": PARITY_EVEN}

SET_MODE_HINT = ("it accepts these writes only in its set mode: hold its button for about 3 seconds "
                 "until the display changes, then confirm (how long set mode lasts is not documented: "
                 "confirm promptly)")


class ConfigError(Exception):
    """Bad input or a refused plan: nothing was written."""


@dataclass(frozen=True)
class Reach:
    """Where a meter answers: its id and the line setting."""

    slave: int
    comset: Comset

    def __str__(self) -> str:
        return f"id {self.slave} at {comset_label(self.comset)}"


@dataclass(frozen=True)
class Change:
    """One setting to write: the number the meter stores and what it means."""

    setting: Setting
    code: int
    meaning: str

    def text(self) -> str:
        return describe(self.setting, self.code)


def describe(setting: Setting, code: Optional[int]) -> str:
    """A stored number in words: ``9600 baud``, ``even parity, 1 stop bit``, ``7``."""
    meaning = setting.meaning(code)
    if meaning is None:
        return "no whole number" if code is None else f"unknown code {code}"
    if setting.key == "baud":
        return f"{meaning} baud"
    return PARITY_WORDS.get(meaning, meaning) if setting.key == "parity" else meaning


def normalise(setting: Setting, value: str) -> str:
    """What a user wrote -> the table's meaning: ``parity=e`` -> ``E1``, ``baud=09600`` -> ``9600``."""
    text = value.strip().upper()
    if setting.key == "parity" and len(text) == 1:
        return text + "1"
    if setting.key == "id":
        if text == "0":
            raise ConfigError("id 0 is the broadcast address: no meter can have it, and broadcast writes are refused")
        try:
            return str(parse_slave_id(text))
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return text.lstrip("0") if text.isdigit() else text


def parse_changes(model: MeterModel, items: Sequence[str]) -> List[Change]:
    """``["id=7", "baud=9600", "parity=N"]`` -> the changes, checked against the model's table."""
    if not items:
        raise ConfigError("nothing to set: give NAME=VALUE, e.g. id=7 baud=9600 parity=N")
    writable = [s for s in model.settings if s.writable]
    if not writable:
        raise ConfigError(f"{name_of(model)} documents no setting as writable over MODBUS: "
                          f"change it on {model.front_panel}")
    changes: Dict[str, Change] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip():
            raise ConfigError(f"{item!r} is not NAME=VALUE")
        setting = _setting(model, key)
        if key in changes:
            raise ConfigError(f"{key} is given twice")
        meaning = normalise(setting, value)
        code = setting.code_for(meaning)
        if code is None:
            offered = ", ".join(text for _, text in setting.codes)
            raise ConfigError(f"{name_of(model)} has no {setting.label} {value.strip()!r} (it offers: {offered})")
        changes[key] = Change(setting, code, meaning)
    return list(changes.values())


def _setting(model: MeterModel, key: str) -> Setting:
    try:
        setting = model.setting(key)
    except KeyError:
        known = ", ".join(s.key for s in model.settings) or "none"
        raise ConfigError(f"{name_of(model)} has no setting {key!r} (settings: {known})") from None
    if not setting.writable:
        raise ConfigError(f"{name_of(model)} does not document its {setting.label} as writable over MODBUS: "
                          f"change it on {model.front_panel}")
    return setting


def name_of(model: MeterModel) -> str:
    return f"{model.manufacturer} {model.model}"


def write_frame(slave: int, change: Change) -> bytes:
    """The FC 16 request that stores one setting (one parameter per message)."""
    return rtu.build_write(slave, change.setting.address, list(change.setting.words(change.code)))


def target(reach: Reach, changes: Sequence[Change]) -> Reach:
    """Where the meter answers once ``changes`` have taken effect; ConfigError when sdm could not reach it there."""
    slave, baud, parity = reach.slave, reach.comset.baud, reach.comset.parity
    for change in changes:
        if change.setting.key == "id":
            slave = int(change.meaning)
        elif change.setting.key == "baud":
            baud = int(change.meaning)
        elif change.setting.key == "parity":
            if change.meaning not in LINE_PARITY:
                raise ConfigError(f"{PARITY_WORDS[change.meaning]} is a line setting sdm cannot speak "
                                  f"(it uses 8N1 or 8E1): the meter would be out of its reach")
            parity = LINE_PARITY[change.meaning]
    comset = Comset(baud, parity)
    if comset not in COMSETS.values():
        raise ConfigError(f"{comset} is not in sdm's -c table (2400, 9600 or 19200 baud with 8N1 or 8E1): "
                          f"the meter would be out of its reach")
    return Reach(slave, comset)


class MeterSilent(Exception):
    """The meter did not answer at the id and line setting given."""


class Session:
    """One port, reopened at another line setting when a step needs it; every request waits the
    meter's pause first, since Eastron meters want quiet time between requests."""

    def __init__(self, open_line: Callable[[Comset], Transport], timeout: float, pause: float = 0.060):
        self.open_line = open_line
        self.timeout = timeout
        self.pause = pause
        self._comset: Optional[Comset] = None
        self._line: Optional[Transport] = None

    def line(self, comset: Comset) -> Transport:
        if self._line is None or self._comset != comset:
            self.close()
            self._line = self.open_line(comset)
            self._comset = comset
        return self._line

    def close(self) -> None:
        if self._line is not None:
            self._line.close()
        self._line, self._comset = None, None

    def read(self, reach: Reach, address: int, count: int) -> List[int]:
        line = self.line(reach.comset)
        time.sleep(self.pause)
        return rtu.exchange(line, reach.slave, READ_HOLDING, address, count, self.timeout)

    def write(self, reach: Reach, change: Change) -> None:
        line = self.line(reach.comset)
        time.sleep(self.pause)
        words = list(change.setting.words(change.code))
        rtu.write_exchange(line, reach.slave, change.setting.address, words, self.timeout)

    def in_use(self, reach: Reach) -> bool:
        """Whether any device answers at ``reach`` (the bus scan's probe: a code or an exception)."""
        line = self.line(reach.comset)
        time.sleep(self.pause)
        outcome = Scanner(RtuLink(line), self.timeout).scan_id(reach.slave)
        return outcome.found is not None or outcome.answered


def read_meter_code(session: Session, reach: Reach) -> Optional[int]:
    """The Eastron meter code, None when the device answers with an exception; MeterSilent when it is not there."""
    try:
        return session.read(reach, METER_CODE_ADDRESS, 1)[0]
    except rtu.ExceptionReply:
        return None
    except rtu.NoReply:
        raise MeterSilent(f"no answer at {reach}") from None


def identify(code: Optional[int], keyword: Optional[str]) -> Optional[MeterModel]:
    """The model the meter code proves, or the one named by --type (refused when the code contradicts it)."""
    by_code = next((m for m in MODELS.values() if code is not None and m.meter_code == code), None)
    if not keyword:
        return by_code
    try:
        model = lookup(keyword)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if by_code is not None and by_code is not model:
        raise ConfigError(f"the meter's code 0x{code:04X} says it is an {name_of(by_code)}, not an {name_of(model)}")
    return model


def read_settings(session: Session, reach: Reach, model: MeterModel) -> Dict[str, Optional[int]]:
    return {s.key: s.stored(session.read(reach, s.address, s.encoding.width)) for s in model.settings}


def identity_text(item: Identity, words: Sequence[int]) -> str:
    if item.kind == "hex":
        return f"0x{words[0]:04X}"
    if item.kind == "uint32":
        return str(struct.unpack(">I", struct.pack(">HH", *words[:2]))[0])
    return " ".join(f"0x{word:04X}" for word in words)


def writability(model: MeterModel, setting: Setting) -> str:
    if not setting.writable:
        return f"read only here: change it on {model.front_panel}"
    mode = " in set mode" if model.set_mode else ""
    return f"writable over MODBUS{mode}, takes effect {setting.applies}"


class Configurator:
    """``show`` and ``set`` for one port: messages go to ``out``, ``port`` names it in hints."""

    def __init__(self, session: Session, port: str, out: TextIO):
        self.session = session
        self.port = port
        self.out = out

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def model_at(self, reach: Reach, keyword: Optional[str]) -> MeterModel:
        code = read_meter_code(self.session, reach)
        model = identify(code, keyword)
        if model is None:
            known = ", ".join(sorted(MODELS))
            shown = "no meter code" if code is None else f"meter code 0x{code:04X}"
            raise ConfigError(f"the device at {reach} answers ({shown}) but its model is not proven: "
                              f"name it with --type ({known})")
        return model

    def show(self, reach: Reach, keyword: Optional[str] = None) -> int:
        model = self.model_at(reach, keyword)
        self.say(f"{name_of(model)} at {reach}")
        for item in model.identity:
            self.say(f"  {item.label:<24} {self._identity(reach, item)}")
        for setting in model.settings:
            try:
                words = self.session.read(reach, setting.address, setting.encoding.width)
                held = describe(setting, setting.stored(words))
            except rtu.ModbusError as err:
                held = f"(not read: {err})"
            self.say(f"  {setting.label:<24} {held:<26} {writability(model, setting)}")
        if not model.settings:
            self.say(f"  No communication settings of the {model.model} are documented as MODBUS registers: "
                     f"its id, baud rate and parity are changed on {model.front_panel}.")
        if model.set_mode and any(s.writable for s in model.settings):
            self.say(f"  Writing needs the {model.model}'s set mode: {SET_MODE_HINT}.")
        return OK

    def _identity(self, reach: Reach, item: Identity) -> str:
        try:
            return identity_text(item, self.session.read(reach, item.address, item.count))
        except rtu.ModbusError as err:
            return f"(not read: {err})"

    def set(self, reach: Reach, items: Sequence[str], keyword: Optional[str] = None, dry_run: bool = False,
            confirm: Callable[[str], bool] = lambda prompt: False) -> int:
        model = self.model_at(reach, keyword)
        changes = parse_changes(model, items)
        goal = target(reach, changes)
        current = read_settings(self.session, reach, model)
        pending = [c for c in changes if current.get(c.setting.key) != c.code]
        if not pending:
            self.say(f"{name_of(model)} at {reach} already holds " + ", ".join(c.text() for c in changes)
                     + ": nothing to write.")
            return OK
        self._refuse_taken(reach, goal)
        self._print_plan(model, reach, goal, current, pending)
        if dry_run:
            self.say("Dry run, nothing written. The frames (FC 16, one setting each):")
            for change in pending:
                self.say(f"  {write_frame(reach.slave, change).hex(' ')}   {change.setting.label} = {change.text()}")
            return OK
        if not confirm(f"Write {len(pending)} setting(s) to the meter at {reach}? [y/N] "):
            self.say("Nothing written.")
            return REFUSED
        return self._write_all(model, reach, goal, pending)

    def _refuse_taken(self, reach: Reach, goal: Reach) -> None:
        """Probe the new id (at the old and the new line setting): a device there would clash."""
        probes = []
        if goal.slave != reach.slave:
            probes.append(Reach(goal.slave, reach.comset))
        if goal.comset != reach.comset:
            probes.append(goal)
        for probe in probes:
            if self.session.in_use(probe):
                raise ConfigError(f"another device already answers at {probe}: choose a free id "
                                  f"(sdm_detect -s {self.port} --comset all lists the ones in use)")

    def _print_plan(self, model: MeterModel, reach: Reach, goal: Reach, current: Dict[str, Optional[int]],
                    pending: Sequence[Change]) -> None:
        self.say(f"{name_of(model)} at {reach}:")
        for change in pending:
            old = describe(change.setting, current.get(change.setting.key))
            self.say(f"  {change.setting.label}: {old} -> {change.text()} "
                     f"(holding register 0x{change.setting.address:04X}, takes effect {change.setting.applies})")
        if goal != reach:
            self.say(f"  Afterwards the meter answers at {goal}.")
        if model.set_mode:
            self.say(f"The {model.model}: {SET_MODE_HINT}.")

    def _write_all(self, model: MeterModel, reach: Reach, goal: Reach, pending: Sequence[Change]) -> int:
        at = reach
        written: List[Change] = []
        for change in pending:
            try:
                self.session.write(at, change)
            except rtu.ExceptionReply as err:
                self.say(f"The meter refused the {change.setting.label} write ({err}).")
                if model.set_mode:
                    self.say(f"The {model.model} refuses writes outside its set mode: {SET_MODE_HINT}.")
                if not written:
                    self.say("Nothing was written.")
                    return REFUSED
                self._verify(model, reach, at, goal, written)
                return REFUSED
            except rtu.ModbusError as err:
                self.say(f"No clean answer to the {change.setting.label} write ({err}): "
                         f"the meter may or may not have taken it.")
                self.whereabouts(reach, goal)
                return REFUSED
            except KeyboardInterrupt:
                self.say(f"Interrupted during the {change.setting.label} write.")
                self.whereabouts(reach, goal)
                raise
            written.append(change)
            if change.setting.applies == AT_ONCE:
                at = target(at, [change])
        return self._verify(model, reach, at, goal, written)

    def _verify(self, model: MeterModel, reach: Reach, at: Reach, goal: Reach, written: Sequence[Change]) -> int:
        """Read the settings back where the meter should answer now (or, failing that, at the old
        and the new place) and say exactly what it holds."""
        for where in dict.fromkeys((at, reach, goal)):
            try:
                holds = read_settings(self.session, where, model)
            except rtu.ModbusError:
                continue
            self.say(f"Read back at {where}: "
                     + ", ".join(f"{s.label} {describe(s, holds[s.key])}" for s in model.settings) + ".")
            wrong = [c for c in written if holds.get(c.setting.key) != c.code]
            if wrong:
                self.say("The meter does not hold " + ", ".join(f"{c.setting.label} {c.text()}" for c in wrong) + ".")
                self.whereabouts(reach, goal)
                return REFUSED
            if where != goal:
                self.say(f"Stored, not yet in effect: the new settings take effect after a power cycle. Switch "
                         f"the meter off and on; until then it answers at {where}, afterwards at {goal}.")
                self.say(f"Then check it: sdm_config -s {self.port} -c {comset_number(goal.comset)} "
                         f"show {goal.slave}")
            else:
                self.say(f"Done: the meter answers at {goal} and holds the new settings.")
            return OK
        self.say(f"The meter answers neither at {reach} nor at {goal} after the write.")
        self.whereabouts(reach, goal)
        return REFUSED

    def whereabouts(self, reach: Reach, goal: Reach) -> None:
        """How to find a meter whose state is in doubt."""
        self.say(f"To reach the meter, try its old settings ({reach}) and its new ones ({goal}), "
                 f"each also after switching it off and on, or scan every line setting: "
                 f"sdm_detect -s {self.port} --comset all")

