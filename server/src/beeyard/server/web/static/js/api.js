// The REST API as the UI uses it: JSON in, the {"data": ...} envelope out,
// and the session's CSRF token sent on every write. The UI can do nothing
// that a script with the same credentials could not do through this API.

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

let csrfToken = null;

/** A failed call: the HTTP status, the server's message, and the error body. */
export class ApiError extends Error {
  constructor(status, message, body = null, headers = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.body = body ?? {};
    this.headers = headers;
  }
}

/** Call the API and return the `data` of the envelope, or throw an ApiError. */
export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (!SAFE_METHODS.has(method) && csrfToken) {
    headers["X-CSRF-Token"] = csrfToken;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "The server cannot be reached. Check the connection and try again.");
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // not JSON: a proxy's error page, say; reported below by status
  }
  if (!response.ok) {
    const message = payload?.error ?? `The server answered ${response.status} ${response.statusText}`;
    throw new ApiError(response.status, message, payload, response.headers);
  }
  return payload?.data;
}

/** Sign in. Throws ApiError; `err.body.totp_required` asks for a two-factor code. */
export async function login(username, password, totpCode) {
  const body = { username, password };
  if (totpCode) body.totp_code = totpCode;
  const data = await request("POST", "/api/auth/login", body);
  csrfToken = data?.csrf_token ?? null;
  return data;
}

/** Who is signed in, or null when nobody is (a 401). */
export async function me() {
  try {
    const data = await request("GET", "/api/auth/me");
    csrfToken = data?.csrf_token ?? csrfToken;
    return data;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return null;
    throw err;
  }
}

/** Sign out this browser. */
export async function logout() {
  try {
    await request("POST", "/api/auth/logout");
  } finally {
    csrfToken = null;
  }
}

/** The CSRF token of the current session, for code that calls fetch itself. */
export function currentCsrfToken() {
  return csrfToken;
}
