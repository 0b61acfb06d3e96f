// Mnemo's live page: polls the API every few seconds and draws small SVG line charts.
// No dependencies, no build step. The token (when the deployment has one) lives in this
// tab's sessionStorage and travels only in the Authorization header.
"use strict";

const REFRESH_MS = 2000;
const HISTORY_LIMIT = 500;
const TOKEN_KEY = "mnemo-api-token";
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
const SVG_NS = "http://www.w3.org/2000/svg";
const W = 600, H = 220, PAD = { left: 48, right: 110, top: 10, bottom: 24 };

// The model shown: ?model=<name> where the deployment serves several (MNEMO_MODELS; its /v1
// routes live under /v1/models/<name>/), else the default model.
const MODEL = new URLSearchParams(location.search).get("model");
const API = MODEL ? "/v1/models/" + encodeURIComponent(MODEL) + "/" : "/v1/";

// What the page shows, for people and for tests: the last API answers and every drawn series.
window.__mnemo = { state: "loading", refreshes: 0, stats: null, history: null, versions: null, charts: {},
                   model: MODEL, api: API, models: null };

class Unauthorized extends Error {}

async function getJson(path) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized(path);
  if (!response.ok) throw new Error(path + ": HTTP " + response.status);
  return response.json();
}

// ---- series: one value per history entry, then the current /v1/stats value ----------------

function tagNames(history, stats) {
  const names = new Set();
  for (const row of [...history, stats]) Object.keys(row.tags || {}).forEach((t) => names.add(t));
  return [...names].sort();
}

function seriesOf(rows, pick) {
  const out = [];
  for (const row of rows) {
    const value = pick(row);
    if (typeof value === "number" && Number.isFinite(value)) out.push([row.time, value]);
  }
  return out;
}

function chartSeries(history, stats) {
  const now = [...history, { ...stats, time: Date.now() }];
  const tags = tagNames(history, stats);
  const drift = (name) => (row) => (row.drift || {})[name];
  const perTag = (field) => Object.fromEntries(
    tags.map((t) => [t, seriesOf(now, (row) => ((row.tags || {})[t] || {})[field])]));
  return {
    accuracy: {
      prequential: seriesOf(now, (row) => row.prequential_accuracy),
      balanced: seriesOf(now, (row) => row.balanced_accuracy),
    },
    tag_accuracy: perTag("accuracy"),
    tag_forgetting: perTag("forgetting"),
    drift: { psi_max: seriesOf(now, drift("psi_max")), prediction_js: seriesOf(now, drift("prediction_js")),
             label_js: seriesOf(now, drift("label_js")) },
    feedback_lag: { feedback_lag: seriesOf(now, (row) => row.feedback_lag) },
    loss: { loss: seriesOf(history, (row) => row.loss) },  // /v1/stats carries no loss
  };
}

// ---- drawing -------------------------------------------------------------------------------

function el(name, attrs, text) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function fmt(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? String(value) : value.toPrecision(3);
}

function drawChart(svg, series) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const points = Object.values(series).flat();
  const plotted = {};
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom }));
  svg.append(el("line", { class: "axis", x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom }));
  if (!points.length) {
    svg.append(el("text", { x: W / 2 - 30, y: H / 2 }, "no data yet"));
    return plotted;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  svg.append(el("text", { x: 2, y: PAD.top + 8 }, fmt(y1)));
  svg.append(el("text", { x: 2, y: H - PAD.bottom }, fmt(y0)));
  svg.append(el("text", { x: PAD.left, y: H - 6 }, new Date(x0).toLocaleTimeString()));
  svg.append(el("text", { x: W - PAD.right - 50, y: H - 6 }, new Date(x1).toLocaleTimeString()));
  Object.entries(series).forEach(([name, data], i) => {
    const color = COLORS[i % COLORS.length];
    const line = el("polyline", {
      stroke: color, points: data.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
      "data-name": name, "data-values": JSON.stringify(data.map((p) => p[1])),
    });
    svg.append(line);
    if (data.length === 1) svg.append(el("circle", { cx: sx(data[0][0]), cy: sy(data[0][1]), r: 3, fill: color }));
    svg.append(el("text", { x: W - PAD.right + 8, y: PAD.top + 12 + 14 * i, fill: color }, name));
    plotted[name] = data.map((p) => p[1]);
  });
  return plotted;
}

function lineage(versions) {
  const byNumber = new Map(versions.versions.map((v) => [v.version, v]));
  const chain = [];
  for (let v = byNumber.get(versions.current); v && chain.length < 20; v = byNumber.get(v.parent)) chain.push(v);
  const list = document.getElementById("lineage");
  list.replaceChildren(...chain.map((v) => {
    const item = document.createElement("li");
    item.dataset.version = v.version;
    item.dataset.status = v.status;
    item.title = `${v.created_at} · ${v.samples_seen} samples · ${v.strategy}`;
    item.textContent = `v${v.version} (${v.status}, ${v.samples_seen} samples)`;
    return item;
  }));
  return chain.map((v) => v.version);
}

function table(id, rows) {
  document.querySelector(`#${id} tbody`).replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    cells.forEach((c) => { const td = document.createElement("td"); td.textContent = fmt(c); tr.append(td); });
    return tr;
  }));
}

function render(stats, history, versions) {
  for (const cell of document.querySelectorAll("[data-field]")) {
    const value = stats[cell.dataset.field];
    cell.dataset.value = JSON.stringify(value ?? null);
    cell.textContent = fmt(value);
  }
  const charts = chartSeries(history, stats);
  const plotted = {};
  for (const svg of document.querySelectorAll("svg[data-chart]")) {
    plotted[svg.dataset.chart] = drawChart(svg, charts[svg.dataset.chart]);
  }
  table("tags", Object.entries(stats.tags || {}).map(([t, v]) => [t, v.accuracy, v.forgetting]));
  const drift = stats.drift || {};
  table("drift", ["psi_max", "prediction_js", "label_js", "concept_drift_events"].map((k) => [k, drift[k]]));
  return { plotted, lineage: lineage(versions) };
}

// ---- life cycle ----------------------------------------------------------------------------

function show(state, message) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = message;
  document.getElementById("login").hidden = state !== "login";
  document.getElementById("data").hidden = state !== "ok";
  document.getElementById("forget").hidden = !sessionStorage.getItem(TOKEN_KEY);
  window.__mnemo.state = state;
}

// Where the deployment serves several models, a link to each one's page.
async function listModels() {
  try {
    const listed = await getJson("/v1/models");
    window.__mnemo.models = listed.models.map((m) => m.name);
    const shown = MODEL || listed.default;
    document.getElementById("model").textContent = shown;
    const nav = document.getElementById("models");
    nav.replaceChildren(...listed.models.filter((m) => m.name !== shown).map((m) => {
      const link = document.createElement("a");
      link.href = "/dashboard?model=" + encodeURIComponent(m.name);
      link.textContent = m.name;
      return link;
    }));
    nav.hidden = listed.models.length < 2;
  } catch (error) {
    setTimeout(listModels, REFRESH_MS);  // a token first, or the API not up yet: try again
  }
}

async function refresh() {
  try {
    const [stats, history, versions] = await Promise.all([
      getJson(API + "stats"), getJson(`${API}stats/history?limit=${HISTORY_LIMIT}`), getJson(API + "versions?limit=50"),
    ]);
    const drawn = render(stats, history.entries, versions);
    Object.assign(window.__mnemo, { stats, history: history.entries, versions, charts: drawn.plotted,
                                    lineage: drawn.lineage });
    show("ok", "updated " + new Date().toLocaleTimeString());
  } catch (error) {
    if (error instanceof Unauthorized) {
      Object.assign(window.__mnemo, { stats: null, history: null, versions: null, charts: {} });
      document.getElementById("login-error").hidden = !sessionStorage.getItem(TOKEN_KEY);
      show("login", "token needed");
    } else {
      show("error", String(error.message || error));
    }
  }
  window.__mnemo.refreshes += 1;
  setTimeout(refresh, REFRESH_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token").value = "";
  show("loading", "loading…");
});
document.getElementById("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  show("loading", "loading…");
});
listModels();
refresh();
