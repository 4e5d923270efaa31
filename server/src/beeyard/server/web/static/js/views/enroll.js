// Add a server (admins): mint a one-time enrollment code, show the commands to run
// on the host, and list the codes still pending with a way to delete them.

import { request } from "../api.js";
import { h, mount } from "../dom.js";
import * as fmt from "../format.js";

const UNIT_URL = "/static/deploy/beeyard-agent.service"; // a copy of deploy/beeyard-agent.service
const UNIT_PATH = "/etc/systemd/system/beeyard-agent.service";

function commandBlock(id, text) {
  const pre = h("pre", { class: "command", id }, text);
  const copy = h("button", { type: "button", class: "copy" }, "Copy");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = "Copied";
    } catch {
      copy.textContent = "Select and copy";
    }
  });
  return h("div", { class: "command-wrap" }, pre, copy);
}

function minted(code, unit) {
  const origin = location.origin;
  return h("div", { class: "minted", id: "minted" },
    h("p", {}, "Code ", h("code", { id: "enroll-code" }, code.code), " — usable once, until ",
      h("strong", { id: "enroll-expiry" }, fmt.when(code.expires_at)), "."),
    h("h3", {}, "1. On the host, as root: enroll the agent"),
    commandBlock("enroll-command", `beeyard-agent enroll --server ${origin} --code ${code.code}`),
    h("h3", {}, "2. Run it"),
    commandBlock("run-command", "beeyard-agent run"),
    h("p", { class: "muted" }, "or, to keep it running, install the systemd unit as ",
      h("code", {}, UNIT_PATH), " and start it:"),
    commandBlock("systemd-command", "systemctl daemon-reload && systemctl enable --now beeyard-agent"),
    h("details", {}, h("summary", {}, "beeyard-agent.service"),
      h("pre", { class: "command unit", id: "systemd-unit" }, unit ?? "(could not load the unit)"),
      h("a", { href: UNIT_URL, download: "beeyard-agent.service" }, "Download")),
    h("p", { class: "muted" }, "The server appears in the list as soon as the agent connects."));
}

function pendingTable(codes, onDelete) {
  const pending = codes.filter((c) => c.status === "pending");
  if (!pending.length) return h("p", { class: "muted", id: "pending-codes" }, "No pending codes.");
  return h("table", { class: "fleet", id: "pending-codes" },
    h("thead", {}, h("tr", {}, ["Code", "Created", "Expires", ""].map((c) => h("th", {}, c)))),
    h("tbody", {}, pending.map((c) => h("tr", { "data-enrollment-id": c.id },
      h("td", {}, h("code", {}, `${c.code_prefix}…`)),
      h("td", {}, fmt.when(c.created_at)),
      h("td", {}, fmt.when(c.expires_at)),
      h("td", {}, h("button", { type: "button", class: "danger", onclick: () => onDelete(c) },
        "Delete"))))));
}

async function loadUnit() {
  try {
    const resp = await fetch(UNIT_URL, { credentials: "same-origin" });
    return resp.ok ? await resp.text() : null;
  } catch {
    return null;
  }
}

/** Render the add-a-server page; returns a cleanup function. */
export function enrollView(root) {
  const message = h("div", { class: "message" });
  const result = h("div", {});
  const list = h("div", {});
  const mint = h("button", { type: "button", class: "primary inline", id: "mint-code" },
    "Create an enrollment code");
  const fail = (err) => mount(message, h("p", { class: "error", role: "alert" }, err.message));

  async function refresh() {
    try {
      mount(list, pendingTable(await request("GET", "/api/agent/enrollments"), remove));
    } catch (err) {
      fail(err);
    }
  }

  async function remove(code) {
    try {
      await request("DELETE", `/api/agent/enrollments/${code.id}`);
      await refresh();
    } catch (err) {
      fail(err);
    }
  }

  mint.addEventListener("click", async () => {
    mint.disabled = true;
    mount(message);
    try {
      const [code, unit] = await Promise.all([
        request("POST", "/api/agent/enrollments", {}), loadUnit()]);
      mount(result, minted(code, unit));
      await refresh();
    } catch (err) {
      fail(err);
    } finally {
      mint.disabled = false;
    }
  });

  mount(root,
    h("p", {}, h("a", { href: "#/" }, "← Servers")),
    h("section", { class: "card wide" },
      h("h1", {}, "Add a server"),
      h("p", {}, "Install the agent on the host (see docs/agent.md), then enroll it with a "
        + "one-time code. The code is shown only now."),
      message, mint, result),
    h("section", { class: "card wide" }, h("h2", {}, "Pending codes"), list));
  refresh();
  return () => {};
}
