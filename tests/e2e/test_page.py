"""The live page in a real headless Chromium, against the gateway reading the simulator."""

import json
import re

import pytest

from tests.browser import Browser
from tests.support import ROOT, wait_until

DEVICES = "sdm630:1,sdm120:2,janitza:26"
PHASE_ROWS = ["Voltage", "Current", "Power", "Cosphi", "Import", "Export", "THD.VoltageNeutral"]
SCREENSHOT = ROOT / "artifacts" / "page.png"

SHOWN = """(() => {
  const card = document.getElementById('meter-Instrument%d');   // cards are keyed by meter name
  if (!card) return null;
  const cells = {};
  for (const td of card.querySelectorAll('td[data-key]'))
    if (td.dataset.key && getComputedStyle(td).display !== 'none' && !td.parentElement.hidden)
      cells[td.dataset.key] = td.textContent;
  return {timestamp: card.dataset.timestamp || '', state: card.querySelector('.state').textContent, cells};
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Browser(tmp_path_factory.mktemp("chromium")).start()
    yield chromium
    chromium.stop()


@pytest.fixture
def page(browser):
    session = browser.page()
    for domain in ("Page", "Runtime", "Log"):
        session.call(f"{domain}.enable")
    yield session
    session.call("Page.navigate", url="about:blank")
    session.close()


def pick(obj, path):
    for key in path.split("."):
        obj = obj[key]
    return obj


def shown(page, device_id):
    return page.evaluate(SHOWN % device_id)


def matching_snapshot(page, gw, device_id):
    """What the card shows and /last/{id} for the same reading (the page and the bus both move on)."""
    def same_reading():
        card = shown(page, device_id)
        last = gw.get(f"/last/{device_id}").json()
        return card and card["timestamp"] == last["Timestamp"] and (card, last)
    return wait_until(same_reading, 15, interval=0.01, what=f"page and /last/{device_id} on one reading")


def assert_matches(text: str, value: float, where: str) -> None:
    """The shown text is the value rounded to the decimals it shows."""
    assert re.fullmatch(r"-?\d+(\.\d+)?", text), (where, text)
    decimals = len(text.partition(".")[2])
    assert abs(float(text) - value) <= 0.5 * 10 ** -decimals + 1e-9, (where, text, value)


def test_page_shows_every_meter_with_the_right_value_in_the_right_column(simulator, gateway, page):
    sim = simulator(DEVICES, "--baud", "9600")   # paced: a reading stays long enough to compare
    gw = gateway(sim.link, DEVICES)
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    wait_until(lambda: page.evaluate("document.querySelectorAll('.meter[data-timestamp]').length") == 3,
               15, what="three meter cards with readings")

    card, last = matching_snapshot(page, gw, 1)
    assert last["Power"]["L2"] != last["Power"]["L3"]      # so a column mix-up shows
    for row in PHASE_ROWS:
        for phase in ("L1", "L2", "L3"):
            key = f"{row}.{phase}"
            assert_matches(card["cells"][key], pick(last, key), f"meter 1 {key}")
    for key in ("TotalPower", "TotalImport", "TotalExport", "TotalCosphi"):
        assert_matches(card["cells"][key], last[key], f"meter 1 {key}")
    assert card["state"] == "available"

    single, last2 = matching_snapshot(page, gw, 2)
    assert_matches(single["cells"]["Power.L1"], last2["Power"]["L1"], "meter 2 Power.L1")
    assert "Power.L2" not in single["cells"] and "Power.L3" not in single["cells"]   # one phase: hidden
    janitza, last26 = matching_snapshot(page, gw, 26)
    assert_matches(janitza["cells"]["Current.L3"], last26["Current"]["L3"], "meter 26 Current.L3")

    before = card["cells"]["Power.L1"]
    wait_until(lambda: shown(page, 1)["cells"]["Power.L1"] != before, 15, what="meter 1 L1 power to change")
    statuses = page.evaluate("[...document.querySelectorAll('#meter-counters tbody tr')]"
                             ".map(tr => tr.children[1].textContent)")
    assert statuses == ["available"] * 3
    wait_until(lambda: page.evaluate("+document.querySelector('#meter-Instrument1 canvas').dataset.points") >= 4,
               15, interval=0.5, what="a few seconds of total power in the chart")
    page.screenshot(SCREENSHOT)
    assert SCREENSHOT.stat().st_size > 10_000
    assert page.console_errors() == []


def test_page_marks_values_stale_and_reconnects_after_a_gateway_restart(simulator, gateway, page):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    wait_until(lambda: (shown(page, 1) or {}).get("timestamp"), 15, what="a first reading on the page")
    gw.kill()
    wait_until(lambda: "disconnected" in page.evaluate("document.getElementById('connection').textContent"),
               10, what="the page to notice the lost connection")
    wait_until(lambda: shown(page, 1)["state"] == "stale", 20, interval=0.5, what="meter 1 marked stale")
    gone = shown(page, 1)["timestamp"]
    gw.restart()
    wait_until(lambda: page.evaluate("document.getElementById('connection').textContent") == "live",
               30, interval=0.2, what="the page to reconnect")
    wait_until(lambda: shown(page, 1)["timestamp"] != gone and shown(page, 1)["state"] == "available",
               15, what="fresh readings after the restart")


def test_page_and_assets_use_relative_urls_so_a_reverse_proxy_sub_path_works(simulator, gateway):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES, wait_values=False)
    html = gw.get("/").body.decode()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "static/app.js" in references and "static/style.css" in references
    for ref in references:
        assert not ref.startswith(("/", "http:", "https:", "//")), ref
        if ref.startswith("static/"):
            assert gw.get(f"/{ref}").status == 200, ref
    script = gw.get("/static/app.js").body.decode()
    assert 'new URL("ws?format=readings", window.location.href)' in script


# Every card and every element in it within the window; an element wider than its card only
# inside a horizontal scroller of that card; every value cell brought into view by scrolling.
LAYOUT_PROBLEMS = """(() => {
  const problems = [];
  const view = document.documentElement;
  const within = (inner, outer) => inner.left >= outer.left - 1 && inner.right <= outer.right + 1;
  if (view.scrollWidth > view.clientWidth + 1)
    problems.push(`the page scrolls sideways: ${view.scrollWidth} > ${view.clientWidth}`);
  const visible = (node) => !node.closest('[hidden]') && node.getClientRects().length > 0;
  for (const card of document.querySelectorAll('.meter, .panel')) {
    const name = card.id || card.className;
    const box = card.getBoundingClientRect();
    if (!within(box, {left: 0, right: view.clientWidth})) problems.push(`${name}: outside the window`);
    for (const node of card.querySelectorAll('*')) {
      if (!visible(node)) continue;
      const scroller = node.parentElement.closest('.scroll');
      const overflow = scroller && card.contains(scroller) ? getComputedStyle(scroller).overflowX : '';
      if (scroller && card.contains(scroller) && !['auto', 'scroll'].includes(overflow))
        problems.push(`${name}: a scroller that does not scroll (${overflow})`);
      if (!(scroller && card.contains(scroller)) && !within(node.getBoundingClientRect(), box))
        problems.push(`${name}: ${node.tagName}.${node.className} sticks out of its card`);
    }
    for (const cell of card.querySelectorAll('td[data-key]')) {
      if (!cell.dataset.key || !visible(cell)) continue;
      cell.scrollIntoView({block: 'nearest', inline: 'nearest'});
      const scroller = cell.closest('.scroll');
      const rect = cell.getBoundingClientRect();
      if (!within(rect, box) || (scroller && !within(rect, scroller.getBoundingClientRect())))
        problems.push(`${name}: ${cell.dataset.key} cannot be scrolled into view`);
    }
    for (const scroller of card.querySelectorAll('.scroll')) scroller.scrollLeft = 0;
  }
  window.scrollTo(0, 0);
  return problems;
})()"""


def set_width(page, width: int) -> None:
    """Lay the page out as a window of that width (a phone below 600 px)."""
    page.call("Emulation.setDeviceMetricsOverride", width=width, height=900 if width > 600 else 844,
              deviceScaleFactor=1, mobile=width < 600)


@pytest.mark.parametrize("width", [390, 900, 1280])
def test_cards_and_tables_fit_at_phone_and_desktop_widths(simulator, gateway, page, width):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    set_width(page, width)
    try:
        page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
        wait_until(lambda: page.evaluate("document.querySelectorAll('.meter[data-timestamp]').length") == 3,
                   15, what="three meter cards with readings")
        assert page.evaluate("window.innerWidth") == width
        assert page.evaluate(LAYOUT_PROBLEMS) == []
        columns = page.evaluate("new Set([...document.querySelectorAll('.meter')]"
                                ".map(card => card.getBoundingClientRect().left)).size")
        assert columns == (1 if width == 390 else 2 if width == 900 else 3)    # the cards reflow
        shot = ROOT / "artifacts" / f"page-{width}.png"
        page.screenshot(shot)
        assert shot.stat().st_size > 10_000
    finally:
        page.call("Emulation.clearDeviceMetricsOverride")


FAKE_SOCKET = """
window.WebSocket = class {
  constructor(url) {
    this.url = url;
    setTimeout(() => {
      this.onopen && this.onopen();
      for (const message of %s) this.onmessage({data: JSON.stringify(message)});
    }, 0);
  }
  close() {}
};
"""


def two_bus_feed(gw):
    """What /ws will send once /status names meters and buses: two buses, both with a meter at id 1."""
    house1, house26, garage1 = (gw.get(f"/last/{n}").json() for n in (1, 26, 2))
    garage1.update(ModbusDeviceId=1, UniqueId="Garage1")
    house1["UniqueId"], house26["UniqueId"] = "House1", "House26"
    status = gw.get("/status").json()
    status["Buses"] = [
        {"Name": "house", "Port": "/dev/ttyUSB0", "Transport": "rtu", "Connected": True, "Reconnects": 0,
         "Requests": 10, "Errors": 0},
        {"Name": "garage", "Port": "/dev/ttyUSB1", "Transport": "rtu", "Connected": False, "Reconnects": 3,
         "Requests": 5, "Errors": 5},
    ]
    status["ConfiguredMeters"] = [
        {"Id": 1, "Type": "SDM630", "Status": "available", "UniqueId": "House1", "Name": "house-1", "Bus": "house"},
        {"Id": 26, "Type": "JANITZA", "Status": "available", "UniqueId": "House26", "Name": "house-26",
         "Bus": "house"},
        {"Id": 1, "Type": "SDM120", "Status": "available", "UniqueId": "Garage1", "Name": "garage-1",
         "Bus": "garage"},
    ]
    return [house1, house26, garage1, status], garage1


GROUPS = """[...document.querySelectorAll('#meters .bus')].map(section => ({
  heading: section.querySelector('.bus-head').hidden ? null : section.querySelector('.bus-name').textContent,
  port: section.querySelector('.bus-port').textContent,
  connected: section.querySelector('.bus-connected').textContent,
  cards: [...section.querySelectorAll('.meter')].map(card => card.dataset.key)}))"""


def test_cards_are_grouped_by_bus_and_keyed_by_name_when_status_gives_them(simulator, gateway, page):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    feed, garage1 = two_bus_feed(gw)
    page.call("Page.addScriptToEvaluateOnNewDocument", source=FAKE_SOCKET % json.dumps(feed))
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    wait_until(lambda: page.evaluate("document.querySelectorAll('.meter[data-timestamp]').length") == 3,
               15, what="three meter cards with readings")
    assert page.evaluate(GROUPS) == [
        {"heading": "house", "port": "/dev/ttyUSB0 · rtu", "connected": "connected", "cards": ["house-1", "house-26"]},
        {"heading": "garage", "port": "/dev/ttyUSB1 · rtu", "connected": "not connected", "cards": ["garage-1"]},
    ]
    garage = page.evaluate("document.getElementById('meter-garage-1').querySelector('[data-key=\"Power.L1\"]')"
                           ".textContent")
    assert_matches(garage, garage1["Power"]["L1"], "garage-1 Power.L1")
    assert page.evaluate(LAYOUT_PROBLEMS) == []


def test_a_one_bus_gateway_shows_one_group_headed_by_its_bus(simulator, gateway, page):
    sim = simulator(DEVICES)
    gw = gateway(sim.link, DEVICES)
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    wait_until(lambda: page.evaluate("document.querySelectorAll('.meter[data-timestamp]').length") == 3,
               15, what="three meter cards with readings")
    wait_until(lambda: page.evaluate(GROUPS)[0]["connected"] == "connected", 10, what="the bus shown connected")
    assert page.evaluate(GROUPS) == [{"heading": "bus", "port": f"{sim.link} · serial", "connected": "connected",
                                      "cards": ["Instrument1", "Instrument2", "Instrument26"]}]


def test_page_shows_each_meters_bus_health_from_status(simulator, gateway, page):
    sim = simulator("sdm630:1", "--baud", "9600", "--turnaround", "1=30")
    gw = gateway(sim.link, "sdm630:1", "--pause", "sdm630=50")
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    health = "document.querySelector('#meter-Instrument1 .health')?.textContent || ''"
    wait_until(lambda: "turnaround" in (page.evaluate(health) or ""), 20, what="the health line of meter 1")
    text = page.evaluate(health)
    timing = gw.get("/status").json()["ConfiguredMeters"][0]["Timing"]
    assert "pause 50 ms (configured)" in text
    p50 = int(re.search(r"turnaround (\d+)/", text).group(1))
    assert 30 <= p50 <= 60 and abs(p50 - timing["TurnaroundMs"]["p50"]) <= 5
    assert page.console_errors() == []
