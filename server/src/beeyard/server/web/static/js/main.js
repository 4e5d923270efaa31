// The Beeyard web UI: sign in, see who is signed in, sign out.
// Native ES modules, no build step; everything goes through the public REST API.

import * as api from "./api.js";
import { h, mount } from "./dom.js";

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

/** The signed-in home page. */
function showHome(me) {
  const user = me.user ?? {};
  const status = h("div", { class: "message" });
  const signOut = h("button", { type: "button", id: "sign-out" }, "Sign out");
  signOut.addEventListener("click", async () => {
    signOut.disabled = true;
    try {
      await api.logout();
      showLogin("You are signed out.");
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 401) {
        showLogin("Your session had already ended.");
        return;
      }
      signOut.disabled = false;
      mount(status, errorBox(err.message));
    }
  });
  mount(nav,
    docsLinks(),
    h("span", { class: "who" }, h("span", { id: "current-user" }, user.username), " · ", user.role),
    signOut,
  );
  mount(app,
    h("section", { class: "card" },
      h("h1", {}, `Welcome, ${user.username}`),
      status,
      h("dl", { class: "facts" },
        h("dt", {}, "Signed in as"), h("dd", { id: "signed-in-as" }, user.username),
        h("dt", {}, "Role"), h("dd", {}, user.role),
        h("dt", {}, "Two-factor"), h("dd", {}, user.totp_enabled ? "on" : "off"),
      ),
      h("p", {},
        "Hosts, metrics and remote operations arrive in later releases. Everything this UI does "
        + "goes through the REST API, documented in ",
        h("a", { href: "/swagger-ui/" }, "Swagger UI"),
        " (raw: ", h("a", { href: "/api-docs/openapi.json" }, "openapi.json"), ").",
      ),
    ),
  );
}

function showFailure(err) {
  mount(nav, docsLinks());
  const retry = h("button", { type: "button", onclick: () => route() }, "Try again");
  mount(app, h("section", { class: "card" }, h("h1", {}, "Beeyard is unavailable"),
    errorBox(err.message), retry));
}

async function route() {
  try {
    const me = await api.me();
    if (me) showHome(me);
    else showLogin();
  } catch (err) {
    showFailure(err);
  }
}

route();
