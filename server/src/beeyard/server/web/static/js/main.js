// The Beeyard web UI: sign in, the fleet live, one server's charts, adding servers.
// Native ES modules, no build step; everything goes through the public REST API.

import * as api from "./api.js";
import { h, mount } from "./dom.js";
import { Fleet } from "./fleet.js";
import { enrollView } from "./views/enroll.js";
import { fleetView } from "./views/fleet.js";
import { serverView } from "./views/server.js";
import { terminalView } from "./views/terminal.js";
import { dockerView } from "./views/docker.js";
import { filesView } from "./views/files.js";
import { taskView, tasksView } from "./views/tasks.js";

const app = document.getElementById("app");
const nav = document.getElementById("nav");

const docsLinks = () => [
  h("a", { href: "/swagger-ui/" }, "API docs"),
];

function errorBox(message) {
  return h("p", { class: "error", role: "alert" }, message);
}

/** The sign-in form. Shows a code field once the server asks for a second factor. */
function showLogin(notice) {
  mount(nav, docsLinks());
  const username = h("input", {
    id: "username", name: "username", autocomplete: "username", required: true,
    autocapitalize: "none", spellcheck: "false",
  });
  const password = h("input", {
    id: "password", name: "password", type: "password", autocomplete: "current-password",
    required: true,
  });
  const totp = h("input", {
    id: "totp", name: "totp_code", autocomplete: "one-time-code", inputmode: "numeric",
    maxlength: "64", spellcheck: "false",
  });
  const totpRow = h("div", { class: "field", hidden: true },
    h("label", { for: "totp" }, "Two-factor code"),
    totp,
    h("small", { class: "muted" }, "The 6-digit code from your authenticator app, or a recovery code."),
  );
  const message = h("div", { class: "message" }, notice ? h("p", { class: "notice" }, notice) : null);
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "card login", id: "login-form", novalidate: false },
    h("h1", {}, "Sign in"),
    message,
    h("div", { class: "field" }, h("label", { for: "username" }, "Username"), username),
    h("div", { class: "field" }, h("label", { for: "password" }, "Password"), password),
    totpRow,
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    mount(message);
    try {
      await api.login(username.value, password.value, totpRow.hidden ? null : totp.value.trim());
      await route();
    } catch (err) {
      if (err instanceof api.ApiError && err.body?.totp_required) {
        totpRow.hidden = false;
        totp.required = true;
        totp.focus();
        mount(message, h("p", { class: "notice" }, "This account uses two-factor authentication."));
      } else {
        mount(message, errorBox(err.message));
        (totpRow.hidden ? password : totp).select();
      }
    } finally {
      submit.disabled = false;
    }
  });
  mount(app, h("section", { class: "centered" }, form));
  username.focus();
}

/** The signed-in shell: navigation, then the view the location hash names. */
function showHome(me) {
  const user = me.user ?? {};
  const status = h("div", { class: "message" });
  const signOut = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOut.addEventListener("click", async () => {
    signOut.disabled = true;
    try {
      await api.logout();
      stopViews();
      showLogin("You are signed out.");
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 401) {
        stopViews();
        showLogin("Your session had already ended.");
        return;
      }
      signOut.disabled = false;
      mount(status, errorBox(err.message));
    }
  });
  mount(nav,
    h("a", { href: "#/" }, "Servers"),
    user.role === "admin" ? h("a", { href: "#/tasks", id: "nav-tasks" }, "Tasks") : null,
    user.role === "admin" ? h("a", { href: "#/add", id: "nav-add" }, "Add a server") : null,
    docsLinks(),
    h("span", { class: "who" }, h("span", { id: "current-user" }, user.username), " · ", user.role),
    signOut,
  );
  session = { me, fleet: new Fleet(), status };
  // The server ends the live stream of a signed-out session or a disabled user (4001);
  // a socket refused outright says nothing, so ask whether the session still holds.
  const current = session;
  session.fleet.subscribe(async (e) => {
    if (e.type !== "link" || (e.state !== "revoked" && e.state !== "closed")) return;
    const ended = e.state === "revoked" || (await api.me().catch(() => true)) === null;
    if (ended && session === current) {
      stopViews();
      showLogin("Your session has ended. Sign in again.");
    }
  });
  showView();
}

let session = null;
let cleanup = () => {};

function stopViews() {
  cleanup();
  cleanup = () => {};
  session?.fleet.stop();
  session = null;
}

/** Render the view of the current hash: #/, #/servers/ID, #/servers/ID/terminal|files|docker,
 * #/tasks, #/tasks/ID, #/add. */
function showView() {
  if (!session) return;
  cleanup();
  const root = h("div", { class: "view" });
  mount(app, session.status, root);
  const hash = location.hash.replace(/^#/, "") || "/";
  const server = hash.match(/^\/servers\/(\d+)$/);
  const terminal = hash.match(/^\/servers\/(\d+)\/terminal$/);
  const files = hash.match(/^\/servers\/(\d+)\/files(?:\?path=(.*))?$/);
  const docker = hash.match(/^\/servers\/(\d+)\/docker$/);
  const task = hash.match(/^\/tasks\/(\d+)(?:\?run=(\d+))?$/);
  const admin = session.me.user?.role === "admin";
  if (server) cleanup = serverView(root, Number(server[1]), { admin });
  else if (terminal && admin) cleanup = terminalView(root, Number(terminal[1]));
  else if (files) cleanup = filesView(root, Number(files[1]), { admin, path: files[2] ? decodeURIComponent(files[2]) : null });
  else if (docker) cleanup = dockerView(root, Number(docker[1]), { admin });
  else if (hash === "/tasks" && admin) cleanup = tasksView(root);
  else if (task && admin) cleanup = taskView(root, Number(task[1]), task[2] ? Number(task[2]) : null);
  else if (hash === "/add" && session.me.user?.role === "admin") cleanup = enrollView(root);
  else cleanup = fleetView(root, session.fleet, session.me);
}

window.addEventListener("hashchange", showView);

function showFailure(err) {
  mount(nav, docsLinks());
  const retry = h("button", { type: "button", onclick: () => route() }, "Try again");
  mount(app, h("section", { class: "card" }, h("h1", {}, "Beeyard is unavailable"),
    errorBox(err.message), retry));
}

async function route() {
  try {
    const me = await api.me();
    stopViews();
    if (me) showHome(me);
    else showLogin();
  } catch (err) {
    showFailure(err);
  }
}

route();
