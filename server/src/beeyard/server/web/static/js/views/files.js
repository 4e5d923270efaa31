// A host's files through its agent: browse the roots its config allows, view and edit
// text, download, upload with progress, make folders, rename and delete. Every action is
// one call of the public /api/files API; the agent decides, and its reasons are shown.

import { ApiError, currentCsrfToken, request } from "../api.js";
import { h, mount } from "../dom.js";
import * as fmt from "../format.js";

const join = (dir, name) => (dir.endsWith("/") ? dir + name : `${dir}/${name}`);
const parent = (path) => path.replace(/\/[^/]+\/?$/, "") || "/";

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err.message ?? String(err));
}

/** Upload `file` to `path` with progress, as `curl -T` would: the raw body. */
function upload(serverId, path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const query = new URLSearchParams({ path, overwrite: "false" });
    xhr.open("POST", `/api/files/${serverId}/upload?${query}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    const csrf = currentCsrfToken();
    if (csrf) xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.addEventListener("progress", (e) => e.lengthComputable && onProgress(e.loaded / e.total));
    xhr.addEventListener("load", () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* reported by status */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body?.data);
      else reject(new ApiError(xhr.status, body?.error ?? `upload failed (${xhr.status})`, body));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "the upload was interrupted")));
    xhr.send(file);
  });
}

/** #/servers/ID/files: returns the view's cleanup. */
export function filesView(root, serverId, { admin, path: start }) {
  let path = start || ".";  // "." is the first of the agent's roots
  let closed = false;
  const title = h("h1", {}, "Files");
  const crumbs = h("nav", { class: "crumbs", id: "files-path", "aria-label": "path" });
  const status = h("div", { class: "message", id: "files-status" });
  const table = h("tbody", { id: "files-list" });
  const viewer = h("section", { class: "card file-viewer", id: "file-viewer", hidden: true });
  const fileInput = h("input", { type: "file", id: "files-upload-input", hidden: true });
  const progress = h("progress", { id: "files-upload-progress", max: 1, value: 0, hidden: true });

  const say = (node) => mount(status, node);
  const go = (next) => {
    path = next;
    history.replaceState(null, "", `#/servers/${serverId}/files?path=${encodeURIComponent(path)}`);
    load();
  };

  async function act(fn, done) {
    say(null);
    try {
      await fn();
      if (done) say(h("p", { class: "notice" }, done));
      await load();
    } catch (err) {
      say(errorBox(err));
    }
  }

  function showCrumbs() {
    const parts = path.split("/").filter(Boolean);
    const links = [h("a", { href: "#", onclick: (e) => { e.preventDefault(); go("/"); } }, "/")];
    parts.forEach((part, i) => {
      const target = `/${parts.slice(0, i + 1).join("/")}`;
      links.push(h("a", { href: "#", onclick: (e) => { e.preventDefault(); go(target); } }, part), " / ");
    });
    mount(crumbs, links);
  }

  async function view(entryPath) {
    viewer.hidden = false;
    mount(viewer, h("p", { class: "muted" }, "Loading…"));
    try {
      const file = await request("POST", `/api/files/${serverId}/read`, { path: entryPath });
      const text = file.encoding === "utf-8";
      const area = h("textarea", { id: "file-content", spellcheck: "false", readonly: !admin || !text, rows: 20 });
      area.value = text ? file.content : "(binary file: download it instead)";
      const save = admin && text ? h("button", {
        type: "button", class: "primary", id: "file-save",
        onclick: () => act(() => request("POST", `/api/files/${serverId}/write`,
          { path: entryPath, content: area.value }), `Saved ${entryPath}`),
      }, "Save") : null;
      mount(viewer, h("header", { class: "row" }, h("h2", {}, entryPath),
        h("span", { class: "muted" }, fmt.bytes(file.size))),
      area, h("div", { class: "row" }, save,
        h("button", { type: "button", onclick: () => { viewer.hidden = true; } }, "Close")));
    } catch (err) {
      mount(viewer, errorBox(err));
    }
  }

  async function download(entryPath) {
    await act(async () => {
      const transfer = await request("POST", `/api/files/${serverId}/download`, { path: entryPath });
      const link = h("a", { href: transfer.download_url, download: "" });
      document.body.append(link);
      link.click();
      link.remove();
    });
  }

  function row(entry) {
    const full = join(path, entry.name);
    const isDir = entry.type === "dir";
    const name = isDir
      ? h("a", { href: "#", class: "dir", onclick: (e) => { e.preventDefault(); go(full); } }, `${entry.name}/`)
      : h("a", { href: "#", onclick: (e) => { e.preventDefault(); view(full); } }, entry.name);
    const actions = [];
    if (!isDir && admin) actions.push(h("button", { type: "button", onclick: () => download(full) }, "Download"));
    if (admin) {
      actions.push(h("button", {
        type: "button", onclick: () => {
          const to = prompt(`Move or rename ${full} to:`, full);
          if (to && to !== full) act(() => request("POST", `/api/files/${serverId}/move`, { source: full, destination: to }), `Moved to ${to}`);
        },
      }, "Rename"));
      actions.push(h("button", {
        type: "button", class: "danger", onclick: () => {
          if (confirm(`Delete ${full}${isDir ? " and everything in it" : ""}?`)) {
            act(() => request("POST", `/api/files/${serverId}/delete`, { path: full, recursive: isDir }), `Deleted ${full}`);
          }
        },
      }, "Delete"));
    }
    return h("tr", { "data-name": entry.name },
      h("td", {}, name), h("td", {}, entry.type),
      h("td", { class: "num" }, isDir ? "" : fmt.bytes(entry.size)),
      h("td", {}, entry.mtime ? new Date(entry.mtime * 1000).toLocaleString() : ""),
      h("td", { class: "actions" }, actions));
  }

  async function load() {
    showCrumbs();
    try {
      const listing = await request("POST", `/api/files/${serverId}/list`, { path });
      if (closed) return;
      if (listing.path && listing.path !== path) {
        path = listing.path;
        showCrumbs();
      }
      const entries = [...listing.entries].sort((a, b) =>
        (a.type === "dir" ? 0 : 1) - (b.type === "dir" ? 0 : 1) || a.name.localeCompare(b.name));
      mount(table, entries.length ? entries.map(row)
        : h("tr", {}, h("td", { colspan: 5, class: "muted" }, "Empty folder")));
      if (listing.hidden) say(h("p", { class: "muted" }, `${listing.hidden} entries hidden by the agent's deny patterns.`));
    } catch (err) {
      if (closed) return;
      mount(table);
      say(errorBox(err));
    }
  }

  fileInput.addEventListener("change", async () => {
    const file = fileInput.files?.[0];
    fileInput.value = "";
    if (!file) return;
    progress.hidden = false;
    progress.value = 0;
    await act(() => upload(serverId, join(path, file.name), file, (p) => { progress.value = p; }),
      `Uploaded ${file.name}`);
    progress.hidden = true;
  });

  const tools = h("div", { class: "row toolbar" },
    h("a", { href: `#/servers/${serverId}` }, "← Server"),
    h("button", { type: "button", onclick: () => go(parent(path)) }, "Up"),
    h("button", { type: "button", onclick: () => load() }, "Refresh"),
    admin ? h("button", {
      type: "button", id: "files-mkdir", onclick: () => {
        const name = prompt("New folder name:");
        if (name) act(() => request("POST", `/api/files/${serverId}/mkdir`, { path: join(path, name) }), `Created ${name}`);
      },
    }, "New folder") : null,
    admin ? h("button", { type: "button", id: "files-upload", onclick: () => fileInput.click() }, "Upload") : null,
    fileInput, progress);

  mount(root, h("section", { class: "card" }, title, tools, crumbs, status,
    h("table", { class: "table files" },
      h("thead", {}, h("tr", {}, ["Name", "Type", "Size", "Modified", ""].map((t) => h("th", {}, t)))),
      table)),
  viewer);
  load();
  return () => { closed = true; };
}
