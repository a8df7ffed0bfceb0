// The HTTP API, as the console calls it: the session cookie goes with every request (the browser
// adds it; no script can read it), and every write carries the session's anti-forgery token.

let csrf = "";
let current = null;
const signedOutListeners = [];

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the API answered ${status}`);
    this.status = status;
    this.error = (body && body.error) || "http_error";
    this.hint = (body && body.hint) || null;
  }
}

export const UNREACHABLE = {
  error: "unreachable",
  message: "the API did not answer",
  hint: "check that `tether api` or `tether up` is running; the console retries on its own",
};

export function useSession(session) {
  current = session;
  csrf = session ? session.csrf : "";
}

// Who is signed in: {owner, admin, csrf, expires_in_s}, or null.
export function session() {
  return current;
}

export function onSignedOut(listener) {
  signedOutListeners.push(listener);
}

export function signedOut(error) {
  useSession(null);
  for (const listener of signedOutListeners) listener(error);
}

const SAFE = new Set(["GET", "HEAD"]);

export async function call(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json" };
  if (token !== undefined) headers.Authorization = `Bearer ${token}`;
  else if (!SAFE.has(method)) headers["X-Tether-CSRF"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
  } catch {
    throw new ApiError(0, UNREACHABLE);
  }
  const data = await answer.json().catch(() => null);
  if (!answer.ok) {
    const error = new ApiError(answer.status, data);
    if (answer.status === 401 && token === undefined) signedOut(error);
    throw error;
  }
  return data;
}

export const project = (name) => `/v1/projects/${encodeURIComponent(name)}`;
