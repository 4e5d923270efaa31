// One server: host facts, live charts of the last 15 minutes (from the live stream,
// seeded from GET /records), and history charts for 1 h / 24 h / 7 d / 30 d.

import { request } from "../api.js";
import { lineChart } from "../charts.js";
import { h, mount } from "../dom.js";
import * as fmt from "../format.js";
import { Fleet } from "../fleet.js";

const LIVE_WINDOW = 15 * 60;
const RANGES = [["1 h", 3600], ["24 h", 86400], ["7 d", 7 * 86400], ["30 d", 30 * 86400]];
const pct = (v) => `${Math.round(v)} %`;
const CHARTS = [
  { id: "cpu", title: "CPU", series: [["cpu", "CPU"]], format: pct, max: 100 },
  { id: "memory", title: "Memory", series: [["memory_percent", "Memory"]], format: pct, max: 100 },
  { id: "net", title: "Network", series: [["net_rx_bps", "Receive"], ["net_tx_bps", "Send"]],
    format: fmt.rate, floor: 1024, binary: true },
  { id: "disk", title: "Disk I/O", series: [["disk_read_bps", "Read"], ["disk_write_bps", "Write"]],
    format: fmt.rate, floor: 1024, binary: true },
];

function facts(server, online) {
  const host = server.host ?? {};
  const m = server.latest?.metrics;
  const rows = [
    ["State", online ? "online" : `offline (last seen ${fmt.ago(server.last_seen)})`],
    ["Hostname", host.hostname], ["OS", host.os], ["Kernel", host.kernel], ["Arch", host.arch],
    ["CPU", host.cpu_model ? `${host.cpu_model} · ${host.cores} cores` : `${host.cores ?? "–"} cores`],
    ["Virtualization", host.virtualization ?? "none"],
    ["Memory", m ? `${fmt.bytes(m.memory.used)} of ${fmt.bytes(m.memory.total)}` : "–"],
    ["Disk", server.latest?.values ? fmt.percent(server.latest.values.disk_used_percent) : "–"],
    ["Load", m ? fmt.load(m.load) : "–"],
    ["Uptime", m ? fmt.duration(m.uptime) : "–"],
    ["Addresses", (host.addresses ?? []).join(", ") || "–"],
    ["Agent", server.agent_version ?? "–"],
    ["Group", server.group?.name ?? "–"],
    ["Tags", (server.tags ?? []).map((t) => t.name).join(", ") || "–"],
  ];
  return h("dl", { class: "facts", id: "host-facts" },
    rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

/** A set of charts over the same series names; `points` as GET /records returns them. */
async function chartGrid(grid, prefix) {
  const charts = [];
  for (const spec of CHARTS) {
    const box = h("div", { class: "chart", id: `${prefix}-${spec.id}` });
    grid.append(h("figure", { class: "chart-card" }, h("figcaption", {}, spec.title), box));
    const chart = await lineChart(box, {
      series: spec.series.map(([, label]) => ({ label })), format: spec.format, max: spec.max,
      floor: spec.floor, binary: spec.binary,
    });
    charts.push({ spec, chart });
  }
  return {
    show(window, points) {
      const xs = points.map((p) => p.ts);
      for (const { spec, chart } of charts) {
        chart.setData(window, xs, ...spec.series.map(([name]) => points.map((p) => p.values[name] ?? null)));
      }
    },
    destroy: () => charts.forEach((c) => c.chart.destroy()),
  };
}

async function records(id, seconds, points) {
  const to = Math.floor(Date.now() / 1000);
  return request("GET", `/api/servers/${id}/records?from=${to - seconds}&to=${to}&points=${points}`);
}

const stepText = (s) => (s % 3600 === 0 ? `${s / 3600} h` : s % 60 === 0 ? `${s / 60} min` : `${s} s`);
const liveSpan = () => {
  const now = Date.now() / 1000;
  return [now - LIVE_WINDOW, now];
};

const flatten = (p) => ({ ts: p.ts, values: Object.fromEntries(
  Object.entries(p.values).map(([k, v]) => [k, v.avg])) });

/** Render the detail page of server `id`; returns a cleanup function. Follows the server
 * on a stream of its own (full metrics for the facts, every sample for the charts). */
export function serverView(root, id, { admin = false } = {}) {
  let fleet = null; // opened once the server is known to exist
  let unsubscribe = () => {};
  const factsBox = h("div", {});
  const title = h("h1", {}, `Server ${id}`);
  // Shown to admins when the agent reported the terminal capability (its own config).
  const terminalLink = h("a", { href: `#/servers/${id}/terminal`, class: "button", id: "open-terminal" },
    "Terminal");
  const terminalSlot = h("span", { class: "button" });
  // Files and containers: shown when the agent allows them (members may read both).
  const filesLink = h("a", { href: `#/servers/${id}/files`, class: "button", id: "open-files" }, "Files");
  const dockerLink = h("a", { href: `#/servers/${id}/docker`, class: "button", id: "open-docker" }, "Containers");
  const opsSlot = h("span", { class: "ops" });
  const liveGrid = h("div", { class: "charts", id: "live-charts" });
  const historyGrid = h("div", { class: "charts", id: "history-charts" });
  const historyNote = h("small", { class: "muted", id: "history-tier" });
  const rangeButtons = RANGES.map(([label, seconds]) => h("button", {
    type: "button", class: "range", "data-range": label, onclick: () => loadHistory(label, seconds),
  }, label));
  const message = h("div", { class: "message" });
  let live = [];
  let liveCharts = null;
  let historyCharts = null;
  let stopped = false;

  mount(root,
    h("p", {}, h("a", { href: "#/" }, "← Servers")),
    h("section", { class: "card wide" }, h("div", { class: "heading" }, title, opsSlot, terminalSlot), message,
      factsBox),
    h("section", { class: "card wide" },
      h("div", { class: "heading" }, h("h2", {}, "Live · last 15 minutes")), liveGrid),
    h("section", { class: "card wide" },
      h("div", { class: "heading" }, h("h2", {}, "History"), h("div", { class: "ranges" }, rangeButtons),
        historyNote), historyGrid));

  function drawFacts() {
    if (!fleet) return;
    const server = fleet.servers.get(id);
    if (!server) {
      if (fleet.ready) mount(factsBox, h("p", { class: "error", id: "not-found" }, `There is no server ${id}.`));
      return;
    }
    title.textContent = server.name;
    const terminal = admin && fleet.isOnline(server) && (server.capabilities ?? []).includes("terminal");
    mount(terminalSlot, terminal ? terminalLink : null);
    const caps = fleet.isOnline(server) ? server.capabilities ?? [] : [];
    mount(opsSlot, caps.includes("files") ? filesLink : null,
      caps.includes("docker_read") ? dockerLink : null);
    mount(factsBox, facts(server, fleet.isOnline(server)));
  }

  async function loadHistory(label, seconds) {
    rangeButtons.forEach((b) => b.classList.toggle("active", b.dataset.range === label));
    try {
      const data = await records(id, seconds, 300);
      if (stopped) return;
      historyNote.textContent = data.points.length
        ? `${data.tier} tier · ${stepText(data.step_seconds)} per point · ${data.points.length} points`
        : `${data.tier} tier · no points yet (the first minute summary is due within a minute)`;
      const span = [Date.parse(data.from) / 1000, Date.parse(data.to) / 1000];
      historyCharts.show(span, data.points.map(flatten));
    } catch (err) {
      mount(message, h("p", { class: "error", role: "alert" }, err.message));
    }
  }

  function onEvent(e) {
    if (e.type === "sample" && e.server_id === id) {
      live.push({ ts: e.ts, values: e.values });
      const cut = e.ts - LIVE_WINDOW;
      while (live.length && live[0].ts < cut) live.shift();
      liveCharts?.show(liveSpan(), live);
    }
    if (e.server_id === id || e.type === "snapshot" || e.type === "tick") drawFacts();
  }

  async function start() {
    drawFacts();
    try {
      await request("GET", `/api/servers/${id}`);
    } catch (err) {
      if (err.status === 404) { // the stream would be refused (404) and retried for ever
        mount(factsBox, h("p", { class: "error", id: "not-found" }, `There is no server ${id}.`));
        return;
      }
    }
    if (stopped) return;
    fleet = new Fleet(id);
    unsubscribe = fleet.subscribe(onEvent);
    liveCharts = await chartGrid(liveGrid, "live");
    historyCharts = await chartGrid(historyGrid, "history");
    if (stopped) return;
    try {
      const seed = await records(id, LIVE_WINDOW, 900);
      const first = live[0]?.ts ?? Infinity;
      live = [...seed.points.map(flatten).filter((p) => p.ts < first), ...live];
      liveCharts.show(liveSpan(), live);
    } catch (err) {
      mount(message, h("p", { class: "error", role: "alert" }, err.message));
    }
    await loadHistory(...RANGES[0]);
  }

  start();
  return () => {
    stopped = true;
    unsubscribe();
    fleet?.stop();
    liveCharts?.destroy();
    historyCharts?.destroy();
  };
}
