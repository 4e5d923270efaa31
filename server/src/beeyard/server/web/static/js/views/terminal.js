// A terminal on one server: xterm.js (vendored, pinned in web/vendor.json) on the
// /api/ws/terminal socket. The socket is opened with a single-use channel token asked
// for just before (POST /api/ws/terminal/ID/token), never with a lasting credential.
// Binary messages are the terminal's bytes both ways; resizes go as a JSON text message.

import { request } from "../api.js";
import { h, mount } from "../dom.js";

const BASE = "/static/vendor/@xterm/";
const MAX_MESSAGE = 64 * 1024; // a paste goes in pieces of this size
let loading = null;

/** xterm.js and its fit addon, loaded on first use (with their style sheets). */
function loadXterm() {
  loading ??= (async () => {
    for (const href of [`${BASE}xterm/css/xterm.css`, "/static/css/terminal.css"]) {
      document.head.append(h("link", { rel: "stylesheet", href }));
    }
    const [{ Terminal }, { FitAddon }] = await Promise.all([
      import(`${BASE}xterm/lib/xterm.mjs`),
      import(`${BASE}addon-fit/lib/addon-fit.mjs`),
    ]);
    return { Terminal, FitAddon };
  })();
  return loading;
}

const encoder = new TextEncoder();

/** How a session ended, in words, from the server's last text message or the close. */
function endText(control, event) {
  if (control?.type === "exit") {
    const why = { exit: "the shell exited", idle: "it was idle too long",
      input_closed: "input closed" }[control.ended] ?? control.ended;
    const code = control.exit_status ?? (control.signal ? `signal ${control.signal}` : "–");
    return `Session ended: ${why} (exit status ${code}).`;
  }
  if (control?.type === "error") return control.error;
  if (event.code === 4001) return "Your session has ended. Sign in again.";
  return `The connection closed (${event.code}${event.reason ? `: ${event.reason}` : ""}).`;
}

/** Render the terminal of server `id` into `root`; returns a cleanup function that
 * closes the socket (the agent then ends the shell and everything it started). */
export function terminalView(root, id) {
  const status = h("p", { class: "muted", id: "terminal-status", role: "status" }, "Connecting…");
  const again = h("button", { type: "button", id: "terminal-reconnect", hidden: true }, "New session");
  const screen = h("div", { class: "terminal-screen", id: "terminal" });
  const title = h("h1", {}, `Terminal · server ${id}`);
  mount(root,
    h("p", {}, h("a", { href: `#/servers/${id}` }, "← Server")),
    h("section", { class: "card wide terminal-card" },
      h("div", { class: "heading" }, title, status, again), screen));
  request("GET", `/api/servers/${id}`).then((server) => {
    title.textContent = `Terminal · ${server.name}`;
  }, () => {}); // the socket reports what went wrong

  let term = null;
  let fit = null;
  let ws = null;
  let stopped = false;
  const onWindowResize = () => fit?.fit();

  function setStatus(text, kind = "muted") {
    status.textContent = text;
    status.className = kind;
  }

  function send(bytes) {
    if (ws?.readyState !== WebSocket.OPEN) return;
    for (let i = 0; i < bytes.length; i += MAX_MESSAGE) ws.send(bytes.subarray(i, i + MAX_MESSAGE));
  }

  async function connect() {
    again.hidden = true;
    setStatus("Connecting…");
    let grant;
    try {
      grant = await request("POST", `/api/ws/terminal/${id}/token`);
    } catch (err) {
      setStatus(err.message, "error");
      again.hidden = false;
      return;
    }
    if (stopped) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}${grant.url}&cols=${term.cols}&rows=${term.rows}`;
    const socket = ws = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    let last = null;
    socket.addEventListener("open", () => {
      setStatus("Connected", "ok");
      term.focus();
    });
    socket.addEventListener("message", (event) => {
      if (typeof event.data === "string") {
        last = JSON.parse(event.data);
        if (last.type === "error" && last.status === 422) setStatus(last.error, "error");
      } else {
        term.write(new Uint8Array(event.data));
      }
    });
    socket.addEventListener("close", (event) => {
      if (stopped || socket !== ws) return;
      const failed = last?.type === "error" || (event.code !== 1000 && last?.type !== "exit");
      setStatus(endText(last, event), failed ? "error" : "muted");
      again.hidden = false;
    });
  }

  async function start() {
    let lib;
    try {
      lib = await loadXterm();
    } catch {
      setStatus("The terminal failed to load.", "error");
      return;
    }
    if (stopped) return;
    term = new lib.Terminal({
      cursorBlink: true, scrollback: 5000, fontSize: 14,
      fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace",
    });
    fit = new lib.FitAddon();
    term.loadAddon(fit);
    term.open(screen);
    fit.fit();
    term.onData((data) => send(encoder.encode(data)));
    term.onBinary((data) => send(Uint8Array.from(data, (c) => c.charCodeAt(0))));
    term.onResize(({ cols, rows }) => {
      if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows }));
    });
    window.addEventListener("resize", onWindowResize);
    again.addEventListener("click", () => {
      term.reset();
      connect();
    });
    await connect();
  }

  start();
  return () => {
    stopped = true;
    window.removeEventListener("resize", onWindowResize);
    ws?.close(1000, "terminal closed");
    term?.dispose();
  };
}
