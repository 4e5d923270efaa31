// Starts Swagger UI on this server's OpenAPI document. A separate file because
// the page's Content-Security-Policy allows no inline script.
//
// "Try it out" uses the browser's own session cookie when signed in to the web UI;
// writes then carry that session's CSRF token, fetched from GET /api/auth/me.
// API keys and bearer tokens can be entered with "Authorize" instead.

import * as api from "./api.js";

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

await api.me().catch(() => null);  // learns the CSRF token if signed in

window.ui = window.SwaggerUIBundle({
  url: "/api-docs/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
  validatorUrl: null,
  docExpansion: "list",
  defaultModelsExpandDepth: 0,
  displayRequestDuration: true,
  filter: true,
  requestInterceptor: (req) => {
    const token = api.currentCsrfToken();
    if (token && !SAFE_METHODS.has((req.method ?? "GET").toUpperCase())) {
      req.headers["X-CSRF-Token"] = token;
    }
    return req;
  },
});
