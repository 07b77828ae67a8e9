// The live page: one card per meter, fed by the gateway's websocket.
// Plain browser JavaScript, no libraries, no build step.
"use strict";

const STALE_AFTER_MS = 10000;      // no reading for this long: the card is marked stale
const CHART_MINUTES = 10;
const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 15000;

// label, unit, decimals, per-phase key (an {L1,L2,L3} object) or null, total key or null
const ROWS = [
  ["Voltage", "V", 1, "Voltage", null],
  ["Current", "A", 2, "Current", null],
  ["Power", "W", 1, "Power", "TotalPower"],
  ["Apparent power", "VA", 1, "ApparentPower", "TotalApparentPower"],
  ["Reactive power", "var", 1, "ReactivePower", "TotalReactivePower"],
  ["Power factor", "", 3, "Cosphi", "TotalCosphi"],
  ["Import", "kWh", 2, "Import", "TotalImport"],
  ["Export", "kWh", 2, "Export", "TotalExport"],
  ["THD voltage", "%", 1, "THD.VoltageNeutral", "THD.AvgVoltageNeutral"],
];
const PHASES = ["L1", "L2", "L3"];

// Cards are keyed by the meter's unique Name when /status gives one (several buses may use the
// same Modbus id), else by its Modbus id; they sit in one group per bus (/status "Buses").
const meters = new Map();          // card key -> card state
const groups = new Map();          // bus name ("" when /status names no bus) -> its section
const keyByUniqueId = new Map();   // a reading's UniqueId -> its card key, from /status
const early = [];                  // readings that came before the first /status
let statusSeen = false;
let socket = null;
let retryMs = RETRY_MIN_MS;

function pick(obj, path) {
  return path.split(".").reduce((o, k) => (o == null ? null : o[k]), obj);
}

function format(value, decimals) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(decimals) : "–";
}

function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

// -- cards ------------------------------------------------------------------------

function buildRows(tbody) {
  for (const [label, unit, , phases, total] of ROWS) {
    const tr = el("tr", { "data-row": phases || total });
    tr.appendChild(el("th", {}, unit ? `${label} (${unit})` : label));
    for (const phase of PHASES) {
      tr.appendChild(el("td", { class: phase, "data-key": phases ? `${phases}.${phase}` : "" }, phases ? "–" : ""));
    }
    tr.appendChild(el("td", { "data-key": total || "" }, total ? "–" : ""));
    tbody.appendChild(tr);
  }
}

function group(bus) {
  let section = groups.get(bus);
  if (section) return section;
  section = document.getElementById("bus-group").content.firstElementChild.cloneNode(true);
  section.dataset.bus = bus;
  section.querySelector(".bus-head").hidden = bus === "";
  section.querySelector(".bus-name").textContent = bus;
  groups.set(bus, section);
  document.getElementById("meters").insertBefore(section, document.getElementById("bus-anchor"));
  return section;
}

function showBus(b) {
  const section = group(String(b.Name));
  section.querySelector(".bus-port").textContent = [b.Port, b.Transport].filter((v) => v).join(" · ");
  const connected = section.querySelector(".bus-connected");
  connected.textContent = b.Connected ? "connected" : "not connected";
  connected.classList.toggle("down", !b.Connected);
}

function meterKey(m) {
  return m.Name != null ? String(m.Name) : String(m.Id);
}

function readingKey(r) {
  if (r.Name != null) return String(r.Name);
  return keyByUniqueId.get(r.UniqueId) || String(r.ModbusDeviceId);
}

function card(key, id, bus) {
  let meter = meters.get(key);
  if (meter) return meter;
  const node = document.getElementById("meter-card").content.firstElementChild.cloneNode(true);
  node.id = `meter-${key}`;
  node.dataset.id = id;
  node.dataset.key = key;
  node.querySelector(".title").textContent = `Meter ${id}`;
  buildRows(node.querySelector("tbody"));
  meter = { key, id, node, lastSeen: 0, status: "", history: [], chartDirty: false };
  meters.set(key, meter);
  const list = group(bus || "").querySelector(".bus-meters");
  const after = [...list.children].find((other) => +other.dataset.id > id);
  list.insertBefore(node, after || null);
  document.getElementById("no-meters").hidden = true;
  return meter;
}

function showReadings(r) {
  const meter = card(readingKey(r), r.ModbusDeviceId, r.Bus);
  const node = meter.node;
  node.querySelector(".title").textContent = `${r.UniqueId} (id ${r.ModbusDeviceId})`;
  node.dataset.timestamp = r.Timestamp;
  const time = node.querySelector(".read-time");
  time.dateTime = r.Timestamp;
  time.textContent = new Date(r.Timestamp).toLocaleTimeString();
  for (const [, , decimals, phases, total] of ROWS) {
    const row = node.querySelector(`tr[data-row="${phases || total}"]`);
    let seen = false;
    for (const cell of row.querySelectorAll("td[data-key]")) {
      if (!cell.dataset.key) continue;
      const value = pick(r, cell.dataset.key);
      cell.textContent = format(value, decimals);
      seen = seen || value != null;
    }
    row.hidden = !seen;
  }
  const singlePhase = ROWS.every(([, , , phases]) => !phases ||
    (pick(r, `${phases}.L2`) == null && pick(r, `${phases}.L3`) == null));
  node.classList.toggle("single-phase", singlePhase);
  const frequency = node.querySelector('[data-key="Frequency"]');
  frequency.textContent = format(r.Frequency, 2);
  frequency.parentElement.hidden = r.Frequency == null;
  meter.lastSeen = Date.now();
  record(meter, r);
  refreshState(meter);
  if (meter.history.length <= 2) drawChart(meter);   // later ones wait for the tick
}

function totalPower(r) {
  if (r.TotalPower != null) return r.TotalPower;
  const phases = PHASES.map((p) => pick(r, `Power.${p}`)).filter((v) => v != null);
  return phases.length ? phases.reduce((a, b) => a + b, 0) : null;
}

function record(meter, r) {
  const watts = totalPower(r);
  if (watts == null) return;
  const t = Date.parse(r.Timestamp);
  const last = meter.history[meter.history.length - 1];
  if (last && t - last[0] < 1000) last[1] = watts;     // at most one point a second
  else meter.history.push([t, watts]);
  const oldest = t - CHART_MINUTES * 60000;
  while (meter.history.length && meter.history[0][0] < oldest) meter.history.shift();
  meter.chartDirty = true;
}

function refreshState(meter) {
  const stale = Date.now() - meter.lastSeen > STALE_AFTER_MS;
  const unavailable = meter.status === "unavailable";
  meter.node.classList.toggle("stale", stale);
  meter.node.classList.toggle("unavailable", unavailable);
  const label = unavailable ? "unavailable" : stale ? (meter.lastSeen ? "stale" : "no reading yet") : "available";
  meter.node.querySelector(".state").textContent = label;
}

// -- chart ------------------------------------------------------------------------

function drawChart(meter) {
  const canvas = meter.node.querySelector("canvas");
  const figure = canvas.parentElement;
  figure.hidden = meter.history.length === 0;
  if (figure.hidden) return;
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 300;
  const height = canvas.clientHeight || 100;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  const style = getComputedStyle(canvas);
  const end = Date.now();
  const start = Math.max(end - CHART_MINUTES * 60000, Math.min(meter.history[0][0], end - 60000));
  canvas.dataset.points = meter.history.length;
  meter.node.querySelector(".window").textContent = Math.max(1, Math.round((end - start) / 60000));
  const values = meter.history.map((p) => p[1]);
  let low = Math.min(0, ...values);
  let high = Math.max(0, ...values);
  if (high - low < 1) high = low + 1;
  const x = (t) => ((t - start) / (end - start)) * width;
  const y = (v) => height - 14 - ((v - low) / (high - low)) * (height - 32);   // labels above and below
  ctx.strokeStyle = style.getPropertyValue("--grid").trim() || "#ccc";
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(0, y(0));
  ctx.lineTo(width, y(0));
  ctx.stroke();
  ctx.strokeStyle = style.getPropertyValue("--line").trim() || "#06c";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  meter.history.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
  ctx.stroke();
  ctx.fillStyle = style.color;
  ctx.font = "11px sans-serif";
  ctx.fillText(`${format(high, 0)} W`, 2, 11);
  ctx.fillText(`${format(low, 0)} W`, 2, height - 2);
  ctx.textAlign = "right";
  ctx.fillText(`now ${format(values[values.length - 1], 0)} W`, width - 2, 11);
  meter.chartDirty = false;
}

// -- status -----------------------------------------------------------------------

function showStatus(s) {
  const counters = document.getElementById("bus-counters");
  const modbus = s.Modbus || {};
  const bus = s.Bus || {};
  const rows = [
    ["Adapter", `${bus.Device || "?"} (${bus.Connected ? "connected" : "not connected"})`],
    ["Reconnects", bus.Reconnects],
    ["Uptime", `${format(s.UptimeSeconds, 0)} s`],
    ["Requests", `${modbus.TotalModbusRequests} (${format(modbus.ModbusRequestRatePerMinute, 0)}/min)`],
    ["Errors", `${modbus.TotalModbusErrors} (${format(modbus.ModbusErrorRatePerMinute, 1)}/min)`],
  ];
  counters.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
  const body = document.querySelector("#meter-counters tbody");
  body.replaceChildren();
  for (const b of s.Buses || []) showBus(b);
  for (const m of s.ConfiguredMeters || []) {
    if (m.UniqueId != null) keyByUniqueId.set(m.UniqueId, meterKey(m));
    const meter = card(meterKey(m), m.Id, m.Bus);
    meter.status = m.Status;
    meter.node.querySelector(".model").textContent = m.Model || m.Type;
    if (!meter.lastSeen) meter.node.querySelector(".title").textContent = `${m.UniqueId || "Meter"} (id ${m.Id})`;
    refreshState(meter);
    const kinds = Object.entries(m.ErrorsByKind || {}).filter(([, n]) => n).map(([k, n]) => `${k} ${n}`);
    const tr = el("tr", { "data-id": m.Id });
    for (const text of [`${m.Name != null ? m.Name : m.Id} ${m.Type}`, m.Status, m.CompleteReadings, m.Requests, m.Errors,
      kinds.join(", ") || "–"]) {
      tr.appendChild(el("td", {}, String(text)));
    }
    tr.children[1].className = m.Status;
    body.appendChild(tr);
    meter.node.querySelector(".health").textContent = health(m.Timing, kinds);
  }
}

// One line of bus health per meter: turnaround, learned pause and timeout, errors by kind.
function health(timing, kinds) {
  if (!timing) return `errors: ${kinds.join(", ") || "none"}`;
  const t = timing.TurnaroundMs || {};
  const learned = timing.Learning === "pause and timeout" ? "learned" : "configured";
  return `turnaround ${format(t.p50, 0)}/${format(t.p95, 0)}/${format(t.max, 0)} ms (p50/p95/max) · ` +
    `pause ${format(timing.PauseMs, 0)} ms (${learned}) · timeout ${format(timing.TimeoutMs, 0)} ms · ` +
    `errors: ${kinds.join(", ") || "none"}`;
}

// -- connection -------------------------------------------------------------------

function setConnection(text, up) {
  const node = document.getElementById("connection");
  node.textContent = text;
  node.classList.toggle("down", !up);
}

function socketUrl() {
  const url = new URL("ws?format=readings", window.location.href);   // relative: works under a sub-path
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function connect() {
  socket = new WebSocket(socketUrl());
  socket.onopen = () => {
    retryMs = RETRY_MIN_MS;
    setConnection("live", true);
  };
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if ("Modbus" in msg) {
      showStatus(msg);
      statusSeen = true;
      early.splice(0).forEach(showReadings);
    } else if ("ModbusDeviceId" in msg) {
      if (statusSeen) showReadings(msg);
      else early.push(msg);      // its card's key and bus come with the status
    }
  };
  socket.onclose = () => {
    const wait = retryMs + Math.random() * 250;
    setConnection(`disconnected, retrying in ${Math.round(wait / 1000)} s`, false);
    retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    setTimeout(connect, wait);
  };
}

function tick() {
  for (const meter of meters.values()) {
    refreshState(meter);
    if (meter.chartDirty || meter.history.length) drawChart(meter);
  }
}

document.getElementById("meters").appendChild(el("span", { id: "bus-anchor", hidden: "" }));
connect();
setInterval(tick, 1000);
