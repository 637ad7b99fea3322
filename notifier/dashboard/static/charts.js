// The main page's live charts, from the daemon's own counters (GET /dashboard/stats, read
// every 2 s): completions per second by path, the added latency's p50 and p99 over the last
// 10 s (from the latency histogram, as Prometheus' histogram_quantile computes them), and
// held requests against max_held. The last two minutes are shown.
"use strict";

const STATS_MS = 2000;
const KEPT = 60;
const LATENCY_WINDOW = 5; // readings: 10 s
const SVG_NS = "http://www.w3.org/2000/svg";
const PATH_COLOURS = { mqtt: "#15803d", sqs: "#b45309", poll: "#2563eb", stop: "#6b7280" };

const readings = []; // {at, stats}

async function followStats() {
  for (;;) {
    try {
      const response = await api("/dashboard/stats");
      if (response.ok) {
        readings.push({ at: Date.now() / 1000, stats: await response.json() });
        if (readings.length > KEPT + LATENCY_WINDOW) readings.shift();
        drawCharts();
      }
    } catch (error) {
      if (error instanceof Unauthorized) await keyEntered();
    }
    await sleep(STATS_MS);
  }
}

function drawCharts() {
  const recent = readings.slice(-KEPT);
  const paths = new Set(recent.flatMap((r) => Object.keys(r.stats.completions)));
  const rates = {};
  for (const path of paths) {
    rates[path] = recent.map((reading) => {
      const before = readings[readings.indexOf(reading) - 1];
      if (!before) return null;
      const delta = (reading.stats.completions[path] || 0) - (before.stats.completions[path] || 0);
      return Math.max(0, delta) / (reading.at - before.at);
    });
  }
  drawChart("completions", rates, PATH_COLOURS, (v) => `${v.toFixed(1)}/s`);
  const latency = { p50: [], p99: [] };
  for (const reading of recent) {
    const before = readings[readings.indexOf(reading) - LATENCY_WINDOW];
    latency.p50.push(before ? quantile(0.5, before.stats, reading.stats) : null);
    latency.p99.push(before ? quantile(0.99, before.stats, reading.stats) : null);
  }
  drawChart("latency", latency, { p50: "#2563eb", p99: "#b91c1c" }, (v) => `${v.toFixed(1)} ms`);
  const held = {
    held: recent.map((r) => r.stats.held),
    capacity: recent.map((r) => r.stats.maxHeld),
  };
  drawChart("held", held, { held: "#1d2330", capacity: "#b91c1c" }, (v) => v.toFixed(0));
}

// The q-quantile in ms of the completions between two readings, all paths together.
function quantile(q, before, after) {
  const bounds = after.latencyBuckets;
  const counts = bounds.map((_, i) => {
    let n = 0;
    for (const [path, cumulative] of Object.entries(after.latency)) {
      n += cumulative[i] - ((before.latency[path] || [])[i] || 0);
    }
    return n;
  });
  const total = counts[counts.length - 1];
  if (!(total > 0)) return null;
  const rank = q * total;
  for (let i = 0; i < bounds.length; i++) {
    if (counts[i] >= rank) {
      const lower = i ? bounds[i - 1] : 0;
      const below = i ? counts[i - 1] : 0;
      const inBucket = counts[i] - below;
      const fraction = inBucket > 0 ? (rank - below) / inBucket : 1;
      return (lower + (bounds[i] - lower) * fraction) * 1000;
    }
  }
  return bounds[bounds.length - 1] * 1000; // above the highest bucket
}

function drawChart(name, series, colours, label) {
  const svg = $(`chart-${name}`);
  const width = 300;
  const height = 90;
  const values = Object.values(series).flat().filter((v) => v != null);
  const top = Math.max(1, ...values) * 1.1;
  const parts = [];
  for (const [key, points] of Object.entries(series)) {
    const step = width / Math.max(1, KEPT - 1);
    const offset = (KEPT - points.length) * step;
    let d = "";
    points.forEach((value, i) => {
      if (value == null) return;
      const x = offset + i * step;
      const y = height - (value / top) * (height - 4);
      d += `${d && points[i - 1] != null ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
    });
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", colours[key] || "#6b7385");
    path.setAttribute("stroke-width", "1.5");
    path.dataset.series = key;
    parts.push(path);
  }
  svg.replaceChildren(...parts);
  const legend = $(`legend-${name}`);
  legend.replaceChildren(
    ...Object.entries(series).map(([key, points]) => {
      const item = document.createElement("span");
      const last = [...points].reverse().find((v) => v != null);
      item.textContent = `${key} ${last == null ? "–" : label(last)}`;
      item.dataset.series = key;
      item.className = "legend-item";
      item.style.setProperty("--colour", colours[key] || "#6b7385");
      return item;
    }),
  );
}

followStats();
