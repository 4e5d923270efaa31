// A host's containers through its agent: the engine, the containers with their state,
// start/stop/restart/pause/unpause/remove for admins (docker_control on the agent), and a
// container's logs followed live over /api/ws/docker/logs. The agent decides; a host
// without an engine or without the capability says so once, plainly.

import { request } from "../api.js";
import { h, mount } from "../dom.js";

const ACTIONS = {
  running: ["stop", "restart", "pause"],
  paused: ["unpause", "stop"],
  exited: ["start", "remove"],
  created: ["start", "remove"],
};
const LOG_LIMIT = 512 * 1024; // characters kept in the log pane; older text scrolls away

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message ?? String(err));
}

/** #/servers/ID/docker: returns the view's cleanup. */
export function dockerView(root, serverId, { admin }) {
  let closed = false;
  let socket = null;
  const status = h("div", { class: "message", id: "docker-status" });
  const engine = h("p", { class: "muted", id: "docker-engine" });
  const table = h("tbody", { id: "docker-containers" });
  const logTitle = h("h2", {}, "Logs");
  const logText = h("pre", { class: "log", id: "docker-log", tabindex: 0 });
  const logs = h("section", { class: "card", id: "docker-logs", hidden: true }, logTitle, logText,
    h("button", { type: "button", onclick: () => stopLogs(true) }, "Close"));

  function stopLogs(hide) {
    socket?.close();
    socket = null;
    if (hide) logs.hidden = true;
  }

  function follow(container) {
    stopLogs(false);
    logs.hidden = false;
    mount(logTitle, `Logs of ${container.name || container.id.slice(0, 12)}`);
    logText.textContent = "";
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ container: container.id, tail: "200", follow: "true" });
    const ws = new WebSocket(`${scheme}://${location.host}/api/ws/docker/logs/${serverId}?${query}`);
    ws.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    ws.addEventListener("message", (e) => {
      if (typeof e.data === "string") {
        const msg = JSON.parse(e.data);
        if (msg.type === "error") logText.append(`\n[${msg.error}]`);
        return;
      }
      const pinned = logText.scrollTop + logText.clientHeight >= logText.scrollHeight - 4;
      logText.append(decoder.decode(e.data, { stream: true }));
      if (logText.textContent.length > LOG_LIMIT) {
        logText.textContent = logText.textContent.slice(-LOG_LIMIT / 2);
      }
      if (pinned) logText.scrollTop = logText.scrollHeight;
    });
    ws.addEventListener("close", (e) => {
      if (socket === ws && e.code !== 1000) logText.append(`\n[the log stream ended: ${e.reason || e.code}]`);
    });
    socket = ws;
  }

  async function action(container, verb) {
    if (verb === "remove" && !confirm(`Remove container ${container.name}?`)) return;
    mount(status);
    try {
      await request("POST", `/api/servers/${serverId}/docker/containers/${encodeURIComponent(container.id)}/action`,
        { action: verb });
      mount(status, h("p", { class: "notice" }, `${verb}: ${container.name} done`));
    } catch (err) {
      mount(status, errorBox(err));
    }
    await load();
  }

  function row(c) {
    const verbs = admin ? ACTIONS[c.state] ?? ["stop", "start"] : [];
    const ports = (c.ports ?? []).filter((p) => p.public)
      .map((p) => `${p.ip ? `${p.ip}:` : ""}${p.public}→${p.private}/${p.type}`).join(", ");
    return h("tr", { "data-id": c.id, "data-name": c.name },
      h("td", {}, c.name), h("td", {}, c.image),
      h("td", {}, h("span", { class: `state state-${c.state}` }, c.state)),
      h("td", {}, c.status), h("td", {}, ports),
      h("td", { class: "actions" },
        h("button", { type: "button", onclick: () => follow(c) }, "Logs"),
        verbs.map((v) => h("button", {
          type: "button", class: v === "remove" ? "danger" : null, onclick: () => action(c, v),
        }, v))));
  }

  async function load() {
    try {
      const [info, list] = await Promise.all([
        request("GET", `/api/servers/${serverId}/docker/info`),
        request("GET", `/api/servers/${serverId}/docker/containers?all=true`),
      ]);
      if (closed) return;
      const facts = info.info ?? {};
      mount(engine, [info.engine, info.version?.Version, facts.OperatingSystem,
        facts.ContainersRunning !== undefined ? `${facts.ContainersRunning} running` : null]
        .filter(Boolean).join(" · "));
      mount(table, list.containers.length ? list.containers.map(row)
        : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No containers")));
    } catch (err) {
      if (closed) return;
      mount(table);
      mount(status, errorBox(err));
    }
  }

  mount(root, h("section", { class: "card" }, h("h1", {}, "Containers"),
    h("div", { class: "row toolbar" }, h("a", { href: `#/servers/${serverId}` }, "← Server"),
      h("button", { type: "button", onclick: () => load() }, "Refresh")),
    engine, status,
    h("table", { class: "table docker" },
      h("thead", {}, h("tr", {}, ["Name", "Image", "State", "Status", "Ports", ""].map((t) => h("th", {}, t)))),
      table)),
  logs);
  load();
  return () => { closed = true; stopLogs(true); };
}
