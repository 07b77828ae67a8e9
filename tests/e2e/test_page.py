"""The live page in a real headless Chromium, against the gateway reading the simulator."""

import re

import pytest

from tests.browser import Browser
from tests.support import ROOT, wait_until

DEVICES = "sdm630:1,sdm120:2,janitza:26"
PHASE_ROWS = ["Voltage", "Current", "Power", "Cosphi", "Import", "Export", "THD.VoltageNeutral"]
SCREENSHOT = ROOT / "artifacts" / "page.png"

SHOWN = """(() => {
  const card = document.getElementById('meter-%d');
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
    sim = simulator(DEVICES)
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
    wait_until(lambda: page.evaluate("+document.querySelector('#meter-1 canvas').dataset.points") >= 4,
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


def test_page_shows_each_meters_bus_health_from_status(simulator, gateway, page):
    sim = simulator("sdm630:1", "--baud", "9600", "--turnaround", "1=30")
    gw = gateway(sim.link, "sdm630:1", "--pause", "sdm630=50")
    page.call("Page.navigate", url=f"http://127.0.0.1:{gw.port}/")
    health = "document.querySelector('#meter-1 .health')?.textContent || ''"
    wait_until(lambda: "turnaround" in (page.evaluate(health) or ""), 20, what="the health line of meter 1")
    text = page.evaluate(health)
    timing = gw.get("/status").json()["ConfiguredMeters"][0]["Timing"]
    assert "pause 50 ms (configured)" in text
    p50 = int(re.search(r"turnaround (\d+)/", text).group(1))
    assert 30 <= p50 <= 60 and abs(p50 - timing["TurnaroundMs"]["p50"]) <= 5
    assert page.console_errors() == []
