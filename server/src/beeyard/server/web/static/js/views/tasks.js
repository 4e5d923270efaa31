// Tasks (admin): commands run on servers, a group or a tag, now or on a cron schedule.
// #/tasks lists and creates them; #/tasks/ID shows one with its runs; a run's output and
// per-server progress stream live from its Server-Sent Events while it runs.

import { request } from "../api.js";
import { h, mount } from "../dom.js";

const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "denied", "offline"]);

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message ?? String(err));
}

/** Split a command line into argv the way a user expects: spaces, with "quoted parts". */
export function splitArgs(line) {
  const args = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  for (const m of line.matchAll(re)) args.push(m[1]?.replace(/\\(.)/g, "$1") ?? m[2] ?? m[3]);
  return args;
}

function field(label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input,
    hint ? h("small", { class: "muted" }, hint) : null);
}

/** The create form: name, command (argv or shell), target, timeout, schedule. */
async function createForm(onCreated) {
  const [servers, groups, tags] = await Promise.all([
    request("GET", "/api/servers"), request("GET", "/api/server-groups"), request("GET", "/api/server-tags"),
  ]);
  const name = h("input", { id: "task-name", required: true, maxlength: 128 });
  const command = h("input", { id: "task-command", required: true, spellcheck: "false", placeholder: "uptime" });
  const shell = h("input", { id: "task-shell", type: "checkbox" });
  const target = h("select", { id: "task-target" },
    servers.map((s) => h("option", { value: `server:${s.id}` }, `Server: ${s.name}`)),
    groups.map((g) => h("option", { value: `group:${g.id}` }, `Group: ${g.name}`)),
    tags.map((t) => h("option", { value: `tag:${t.id}` }, `Tag: ${t.name}`)));
  const timeout = h("input", { id: "task-timeout", type: "number", min: 1, value: 300 });
  const schedule = h("input", { id: "task-schedule", placeholder: "e.g. */15 * * * * (UTC); empty: manual only", spellcheck: "false" });
  const message = h("div", { class: "message" });
  const form = h("form", { class: "card", id: "task-form" }, h("h2", {}, "New task"), message,
    field("Name", name),
    field("Command", command, "Run without a shell: arguments split at spaces, \"quote\" to keep spaces."),
    h("div", { class: "field inline" }, shell, h("label", { for: "task-shell" }, "Run as a shell line (/bin/sh -c; the host's agent must allow exec.allow_shell)")),
    field("Run on", target), field("Timeout (seconds)", timeout), field("Schedule", schedule),
    h("button", { type: "submit", class: "primary" }, "Create"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const [kind, id] = target.value.split(":");
    const body = {
      name: name.value, timeout: Number(timeout.value),
      schedule: schedule.value.trim() || null,
      ...(shell.checked ? { shell: command.value } : { argv: splitArgs(command.value) }),
      ...(kind === "server" ? { server_ids: [Number(id)] } : { [`${kind}_id`]: Number(id) }),
    };
    try {
      const task = await request("POST", "/api/tasks", body);
      onCreated(task);
    } catch (err) {
      mount(message, errorBox(err));
    }
  });
  return form;
}

/** #/tasks */
export function tasksView(root) {
  let closed = false;
  const list = h("tbody", { id: "tasks-list" });
  const status = h("div", { class: "message" });
  const formBox = h("div", {});
  async function load() {
    try {
      const tasks = await request("GET", "/api/tasks");
      if (closed) return;
      mount(list, tasks.length ? tasks.map((t) => h("tr", {},
        h("td", {}, h("a", { href: `#/tasks/${t.id}` }, t.name)),
        h("td", { class: "mono" }, t.shell ?? (t.argv ?? []).join(" ")),
        h("td", {}, t.schedule ?? "manual"),
        h("td", {}, h("button", { type: "button", onclick: () => run(t) }, "Run"))))
        : h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No tasks yet")));
    } catch (err) {
      mount(status, errorBox(err));
    }
  }
  async function run(task) {
    try {
      const started = await request("POST", `/api/tasks/${task.id}/run`);
      location.hash = `#/tasks/${task.id}?run=${started.id}`;
    } catch (err) {
      mount(status, errorBox(err));
    }
  }
  const newButton = h("button", {
    type: "button", id: "task-new", onclick: async () => {
      try {
        mount(formBox, await createForm(() => { mount(formBox); load(); }));
      } catch (err) {
        mount(status, errorBox(err));
      }
    },
  }, "New task");
  mount(root, h("section", { class: "card" }, h("h1", {}, "Tasks"), status, newButton,
    h("table", { class: "table" }, h("thead", {}, h("tr", {}, ["Name", "Command", "Schedule", ""].map((x) => h("th", {}, x)))), list)),
  formBox);
  load();
  return () => { closed = true; };
}

/** One run's per-server progress and output, live while it runs. */
function runPanel(taskId, run) {
  const rows = new Map();
  const panel = h("section", { class: "card", id: `run-${run.id}` },
    h("h2", {}, `Run ${run.id} (${run.trigger})`));
  const summary = h("p", { class: "muted", id: "run-progress" });
  panel.append(summary);
  for (const r of run.results ?? []) {
    const state = h("span", { class: `state state-${r.state}` }, r.state);
    const output = h("pre", { class: "log" }, r.output ?? "");
    const detail = h("span", { class: "muted" }, r.reason ?? "");
    const cancel = h("button", {
      type: "button", onclick: () => request("POST", `/api/tasks/${taskId}/runs/${run.id}/cancel`, { server_id: r.server_id }),
      hidden: FINAL.has(r.state),
    }, "Cancel");
    rows.set(r.server_id, { state, output, detail, cancel });
    panel.append(h("div", { class: "run-server", "data-server": r.server_id },
      h("h3", {}, r.server_name ?? `Server ${r.server_id}`, " ", state, " ", detail, " ", cancel), output));
  }
  let source = null;
  if (run.state === "running") {
    source = new EventSource(`/api/tasks/${taskId}/runs/${run.id}/events`);
    source.addEventListener("output", (e) => {
      const { server_id: id, text } = JSON.parse(e.data);
      const row = rows.get(id);
      if (!row) return;
      row.output.textContent += text;
    });
    source.addEventListener("state", (e) => {
      const s = JSON.parse(e.data);
      const row = rows.get(s.server_id);
      if (!row) return;
      row.state.textContent = s.state;
      row.state.className = `state state-${s.state}`;
      row.detail.textContent = s.exit_code !== null && s.exit_code !== undefined ? `exit ${s.exit_code}` : (s.reason ?? "");
      row.cancel.hidden = FINAL.has(s.state);
    });
    source.addEventListener("progress", (e) => {
      const p = JSON.parse(e.data);
      summary.textContent = `${p.finished} of ${p.total} finished`;
    });
    // After "end" the server closes the stream; closing it here would abort that, and
    // leaving it would make EventSource reconnect and replay the run: close on the error
    // event the server's close raises.
    let ended = false;
    source.addEventListener("end", () => { ended = true; summary.textContent += " · done"; });
    source.addEventListener("error", () => { if (ended) source.close(); });
    // Each (re)connection replays what was produced before it: start the output empty.
    source.addEventListener("open", () => { for (const row of rows.values()) row.output.textContent = ""; });
  } else {
    summary.textContent = run.state;
  }
  return { panel, stop: () => source?.close() };
}

/** #/tasks/ID[?run=RUN] */
export function taskView(root, taskId, runId) {
  let closed = false;
  let stopRun = () => {};
  const status = h("div", { class: "message" });
  const runs = h("div", { id: "task-runs" });
  async function load() {
    try {
      const task = await request("GET", `/api/tasks/${taskId}`);
      const history = await request("GET", `/api/tasks/${taskId}/results?limit=10`);
      if (closed) return;
      const items = history.runs ?? history;
      const chosen = runId ? await request("GET", `/api/tasks/${taskId}/runs/${runId}`) : items[0];
      mount(root, h("section", { class: "card" },
        h("a", { href: "#/tasks" }, "← Tasks"),
        h("h1", {}, task.name), status,
        h("p", { class: "mono" }, task.shell ?? task.argv.join(" ")),
        h("p", { class: "muted" }, task.schedule ? `Schedule ${task.schedule} (UTC)` : "Manual only"),
        h("button", {
          type: "button", id: "task-run", onclick: async () => {
            const started = await request("POST", `/api/tasks/${taskId}/run`).catch((err) => mount(status, errorBox(err)));
            if (started) location.hash = `#/tasks/${taskId}?run=${started.id}`;
          },
        }, "Run now"),
        h("ul", {}, items.map((r) => h("li", {}, h("a", { href: `#/tasks/${taskId}?run=${r.id}` }, `Run ${r.id}`), ` · ${r.trigger} · ${r.state}`)))),
      runs);
      if (chosen) {
        const { panel, stop } = runPanel(taskId, chosen);
        stopRun = stop;
        mount(runs, panel);
      }
    } catch (err) {
      if (!closed) mount(root, errorBox(err));
    }
  }
  load();
  return () => { closed = true; stopRun(); };
}
