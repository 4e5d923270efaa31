// Fleet overview: one row per server, updated in place by the live stream.

import { h, mount } from "../dom.js";
import * as fmt from "../format.js";

const COLUMNS = ["", "Server", "OS", "CPU", "Memory", "Disk", "Net ↓", "Net ↑", "Load", "Uptime"];

function cells(server, online) {
  const m = server.latest?.values; // the summary scalars: what the fleet stream carries
  const host = server.host ?? {};
  return [
    h("span", { class: `dot ${online ? "on" : "off"}`, title: online ? "online" : "offline" }),
    h("span", { class: "name-cell" },
      h("a", { href: `#/servers/${server.id}`, class: "server-link" }, server.name),
      h("small", { class: "muted" }, online ? host.hostname ?? "" : `offline · last seen ${fmt.ago(server.last_seen)}`)),
    `${host.os ?? "–"}`,
    m ? fmt.percent(m.cpu) : "–",
    m ? fmt.percent(m.memory_percent) : "–",
    m ? fmt.percent(m.disk_used_percent) : "–",
    m ? fmt.rate(m.net_rx_bps) : "–",
    m ? fmt.rate(m.net_tx_bps) : "–",
    m ? fmt.load([m.load1, m.load5, m.load15]) : "–",
    online && host.boot_time ? fmt.duration(Date.now() / 1000 - host.boot_time) : "–",
  ];
}

const NAMES = ["state", "name", "os", "cpu", "memory", "disk", "rx", "tx", "load", "uptime"];

function row(server, online) {
  const tr = h("tr", { "data-server-id": server.id, class: online ? "" : "offline" });
  cells(server, online).forEach((c, i) => tr.append(h("td", { class: `col-${NAMES[i]}` }, c)));
  return tr;
}

function empty(isAdmin) {
  return h("div", { class: "empty" },
    h("p", {}, "No servers yet."),
    isAdmin ? h("a", { href: "#/add", class: "button primary" }, "Add a server") : null);
}

/** Render the overview into `root`; returns a cleanup function. */
export function fleetView(root, fleet, me) {
  const isAdmin = me.user?.role === "admin";
  const body = h("tbody", { id: "fleet-rows" });
  const status = h("span", { class: "link-state muted", id: "link-state" });
  const count = h("span", { class: "muted" });
  const table = h("table", { class: "fleet", id: "fleet" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", {}, c)))), body);
  const holder = h("div", { class: "table-wrap" });

  function redraw() {
    const servers = [...fleet.servers.values()].sort((a, b) => a.name.localeCompare(b.name));
    const up = servers.filter((s) => fleet.isOnline(s)).length;
    count.textContent = `${servers.length} server${servers.length === 1 ? "" : "s"} · ${up} online`;
    if (!fleet.ready) mount(holder, h("p", { class: "muted" }, "Connecting…"));
    else if (!servers.length) mount(holder, empty(isAdmin));
    else {
      mount(body, servers.map((s) => row(s, fleet.isOnline(s))));
      if (holder.firstChild !== table) mount(holder, table);
    }
    status.textContent = fleet.link === "open" ? "live" : fleet.link;
    status.className = `link-state ${fleet.link}`;
  }

  mount(root, h("section", { class: "card wide" },
    h("div", { class: "heading" }, h("h1", {}, "Servers"), count, status,
      isAdmin ? h("a", { href: "#/add", class: "button" }, "Add a server") : null),
    holder));
  redraw();
  let queued = false;
  return fleet.subscribe(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      redraw();
    });
  });
}
