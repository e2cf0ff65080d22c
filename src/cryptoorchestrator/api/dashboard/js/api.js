// The API client and the login session.
//
// The access token lives in this module's memory only (never in storage, never in a URL).
// The refresh token is kept in sessionStorage, per tab, so a reload of the tab resumes the
// session; it is single use (rotated on every refresh) and cleared on logout. The access token
// is refreshed in the background shortly before it expires.

const REFRESH_KEY = "cryptoorch.refresh";
/** Seconds before expiry at which the access token is renewed. */
const REFRESH_MARGIN_S = 60;

/** An API failure in the API's one error shape: {code, message, details}. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `request failed (HTTP ${status})`);
    this.status = status;
    this.code = (body && body.code) || "http_error";
    this.details = (body && Array.isArray(body.details) && body.details) || [];
  }
}

const state = { access: null, user: null, timer: null, refreshing: null };
export const session = new EventTarget();

/** The signed-in user's profile ({id, email, role, ...}), or null. */
export function currentUser() {
  return state.user;
}

/** The current access token (for the WebSocket's first message), or null. */
export function accessToken() {
  return state.access;
}

/** Whether the signed-in user may act (start/stop, kill switch): traders and admins. */
export function canTrade() {
  return !!state.user && (state.user.role === "trader" || state.user.role === "admin");
}

async function send(path, { method = "GET", body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  if (response.status === 204) return null;
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json();
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    error.retryAfter = response.headers.get("retry-after");
    error.body = data;
    throw error;
  }
  return data;
}

function adopt(tokens) {
  state.access = tokens.accessToken;
  sessionStorage.setItem(REFRESH_KEY, tokens.refreshToken);
  clearTimeout(state.timer);
  const inS = Math.max(5, Number(tokens.expiresIn || 0) - REFRESH_MARGIN_S);
  state.timer = setTimeout(() => {
    refresh().catch(() => end("Your session expired: please log in again."));
  }, inS * 1000);
}

function end(reason) {
  clearTimeout(state.timer);
  state.access = null;
  state.user = null;
  sessionStorage.removeItem(REFRESH_KEY);
  session.dispatchEvent(new CustomEvent("change", { detail: { reason } }));
}

/**
 * Log in. Throws ApiError with code "mfa_required" when a TOTP or backup code is needed.
 * @param {{email: string, password: string, totpCode?: string, backupCode?: string}} credentials
 */
export async function login(credentials) {
  const body = { email: credentials.email, password: credentials.password };
  if (credentials.totpCode) body.totpCode = credentials.totpCode;
  if (credentials.backupCode) body.backupCode = credentials.backupCode;
  const tokens = await send("/api/auth/login", { method: "POST", body });
  adopt(tokens);
  state.user = await send("/api/auth/profile", { token: state.access });
  session.dispatchEvent(new CustomEvent("change", { detail: {} }));
  return state.user;
}

/** Rotate the refresh token for a new access token (one refresh at a time). */
export function refresh() {
  if (state.refreshing) return state.refreshing;
  const token = sessionStorage.getItem(REFRESH_KEY);
  if (!token) return Promise.reject(new ApiError(401, { message: "not logged in" }));
  state.refreshing = send("/api/auth/refresh", { method: "POST", body: { refreshToken: token } })
    .then((tokens) => {
      adopt(tokens);
      session.dispatchEvent(new CustomEvent("refreshed"));
      return tokens;
    })
    .finally(() => {
      state.refreshing = null;
    });
  return state.refreshing;
}

/** Resume this tab's session after a reload (when it kept a refresh token). */
export async function resume() {
  if (!sessionStorage.getItem(REFRESH_KEY)) return null;
  try {
    await refresh();
    state.user = await send("/api/auth/profile", { token: state.access });
    session.dispatchEvent(new CustomEvent("change", { detail: {} }));
    return state.user;
  } catch {
    end();
    return null;
  }
}

/** End this session on the server (its refresh token too) and here. */
export async function logout() {
  const token = sessionStorage.getItem(REFRESH_KEY);
  try {
    if (state.access) {
      await send("/api/auth/logout", {
        method: "POST",
        body: token ? { refreshToken: token } : {},
        token: state.access,
      });
    }
  } finally {
    end("You are logged out.");
  }
}

/**
 * Call the API as the signed-in user; a 401 triggers one refresh and one retry.
 * @param {string} path
 * @param {{method?: string, body?: any}} [options]
 */
export async function api(path, options = {}) {
  if (!state.access) throw new ApiError(401, { message: "not logged in" });
  try {
    return await send(path, { ...options, token: state.access });
  } catch (error) {
    if (!(error instanceof ApiError) || error.status !== 401) throw error;
    try {
      await refresh();
    } catch {
      end("Your session ended: please log in again.");
      throw error;
    }
    return send(path, { ...options, token: state.access });
  }
}

/** GET a JSON document that answers 503 with a body (health): the body either way. */
export async function apiAllowing503(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error instanceof ApiError && error.status === 503 && error.body) return error.body;
    throw error;
  }
}

/** GET a public JSON document of the head node (no token). */
export function getPublic(path) {
  return send(path);
}

/** A message for an error, naming the offending fields when the API did. */
export function describe(error) {
  if (!(error instanceof ApiError)) return String((error && error.message) || error);
  const fields = error.details.map((d) => `${d.field}: ${d.message}`).join("; ");
  let text = fields ? `${error.message} (${fields})` : error.message;
  if (error.status === 429 && error.retryAfter) text += ` Try again in ${error.retryAfter} s.`;
  return text;
}
