"""The poller with learned timing, on a model clock: a link whose meter needs a pause and takes a
turnaround, so learning, re-planning, the state file and a fixed pause are checked without waiting."""

from sdm.framing import rtu
from sdm.hub import Hub
from sdm.plan import wire_time
from sdm.poller import Poller, PollSettings
from sdm.timing import TimingFile
from sdm.transport import COMSETS, LineCost
from tests.fakes import meter_configs, virtual_meters

CHAR = COMSETS[2].char_time


class ModelLink:
    """A Link to virtual meters on a model clock: an exchange takes its wire time and the meter's
    ``turnaround``; a request sooner than ``need`` after the meter's last answer gets no reply."""

    port, kind, hint = "model", "serial", None
    cost = LineCost(CHAR)
    is_open = True

    def __init__(self, devices, need=0.0, turnaround=0.0):
        self.meters = virtual_meters(devices)
        self.need, self.delay = need, turnaround
        self.now = 0.0
        self.last_end = {}
        self.turnaround = None
        self.lost = 0

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    def open(self):
        pass

    def close(self):
        pass

    def exchange(self, slave, fc, start, count, timeout):
        gap = self.now - self.last_end.get(slave, -1.0)
        self.now += rtu.REQUEST_BYTES * CHAR
        if gap < self.need:
            self.now += timeout
            self.turnaround = None
            self.lost += 1
            raise rtu.NoReply("no reply")
        self.turnaround = self.delay
        self.now += self.delay + rtu.reply_bytes(count) * CHAR
        self.last_end[slave] = self.now
        return self.meters[slave].read(fc, start, count)


def poller_on(link, devices, state=None, **settings):
    configs = meter_configs(devices)
    hub = Hub(configs)
    return hub, Poller(hub, link, configs, PollSettings(**settings), clock=link.clock, sleep=link.sleep,
                       timing_file=state)


def run_for(poller, link, seconds):
    end = link.now + seconds
    while link.now < end:
        poller.step()


def test_a_meter_that_needs_no_pause_loses_it_and_is_read_near_the_wire_minimum():
    link = ModelLink({1: "sdm630"})
    hub, poller = poller_on(link, {1: "sdm630"})
    run_for(poller, link, 60)
    reader = poller.readers[0]
    assert reader.pause == 0.0 and link.lost == 0
    before, start = hub.meters["M1"].complete_readings, link.now
    run_for(poller, link, 10)
    period = (link.now - start) / (hub.meters["M1"].complete_readings - before)
    assert period <= 1.10 * wire_time(reader.blocks, CHAR) + 0.005


def test_a_meter_needing_60_ms_is_learned_and_the_pause_survives_a_restart(tmp_path):
    link = ModelLink({1: "sdm630"}, need=0.060, turnaround=0.010)
    _, poller = poller_on(link, {1: "sdm630"}, TimingFile(tmp_path))
    run_for(poller, link, 300)
    learned = poller.readers[0].pause
    assert 0.050 <= learned <= 0.070 and link.lost <= 8
    lost = link.lost
    run_for(poller, link, 3000)
    assert link.lost == lost                    # no re-check within the hour
    poller.save_timing()
    again = ModelLink({1: "sdm630"}, need=0.060, turnaround=0.010)
    _, restarted = poller_on(again, {1: "sdm630"}, TimingFile(tmp_path))
    assert restarted.readers[0].pause == learned and restarted.readers[0].timing.timeout < 0.3
    run_for(restarted, again, 60)
    assert again.lost == 0


def test_another_model_at_the_id_starts_from_its_own_default(tmp_path):
    link = ModelLink({1: "sdm630"})
    _, poller = poller_on(link, {1: "sdm630"}, TimingFile(tmp_path))
    run_for(poller, link, 60)
    poller.save_timing()
    _, other = poller_on(ModelLink({1: "janitza"}), {1: "janitza"}, TimingFile(tmp_path))
    assert other.readers[0].pause == other.readers[0].config.model.pause


def test_a_learned_turnaround_changes_the_plan():
    link = ModelLink({1: "sdm630"}, turnaround=0.030)
    _, poller = poller_on(link, {1: "sdm630"}, pauses={"sdm630": 0.0})
    first = len(poller.readers[0].blocks)
    run_for(poller, link, 10)
    assert first == 4 and len(poller.readers[0].blocks) == 3


def test_a_fixed_pause_is_kept_even_when_it_fails():
    link = ModelLink({1: "sdm630"}, need=0.060)
    hub, poller = poller_on(link, {1: "sdm630"}, pauses={"sdm630": 0.030})
    run_for(poller, link, 30)
    assert poller.readers[0].pause == 0.030 and hub.meters["M1"].errors["timeout"] > 10


def test_the_hub_hears_the_timing():
    link = ModelLink({1: "sdm630"}, turnaround=0.020)
    hub, poller = poller_on(link, {1: "sdm630"})
    run_for(poller, link, 20)
    figures = hub.meters["M1"].timing
    assert figures["TurnaroundMs"]["p50"] == 20.0 and figures["Learning"] == "pause and timeout"
    assert figures["PauseMs"] < 60 and 50 <= figures["TimeoutMs"] < 300
