// Signed calls to the CVM image API (POST /, like any SDK) and the session
// that holds the key: sessionStorage only, gone when the tab closes.

import { authorization } from "./tc3.js";

export class ApiError extends Error {
  constructor(code, message, requestId) {
    super(code + ": " + message + (requestId ? " (RequestId " + requestId + ")" : ""));
    this.code = code;
    this.requestId = requestId;
  }
}

const SESSION_KEY = "imagegate.session";

export function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return s && s.secretId && s.secretKey && s.region ? s : null;
  } catch (_) {
    return null;
  }
}

export function saveSession(session) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function forgetSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

async function send(session, action, body, timestamp) {
  // The browser sends location.host as the Host header; the server verifies
  // the signature against exactly that value.
  const auth = await authorization(session.secretId, session.secretKey, location.host, body, timestamp,
    { "x-tc-action": action, "x-tc-region": session.region });
  try {
    return await fetch("/", {
      method: "POST",
      cache: "no-store",
      credentials: "omit",
      headers: {
        "Content-Type": "application/json",
        "X-TC-Action": action,
        "X-TC-Version": "2017-03-12",
        "X-TC-Region": session.region,
        "X-TC-Timestamp": String(timestamp),
        "X-TC-Language": "en-US",
        "Authorization": auth,
      },
      body,
    });
  } catch (e) {
    throw new ApiError("Console.NetworkError", "the server cannot be reached (" + e.message + ")", "");
  }
}

export async function callApi(session, action, params) {
  if (!globalThis.crypto || !crypto.subtle) {
    throw new ApiError("Console.InsecureContext",
      "this page is not a secure context, so the browser offers no WebCrypto to sign requests. " +
      "Open the console over HTTPS, or through localhost (e.g. an SSH tunnel).", "");
  }
  const body = JSON.stringify(params || {});
  const resp = await send(session, action, body, Math.floor(Date.now() / 1000));
  let data = null;
  try {
    data = await resp.json();
  } catch (_) {
    // handled below
  }
  const r = data && data.Response;
  if (!resp.ok || !r || typeof r !== "object") {
    throw new ApiError("Console.BadReply", "unexpected reply (HTTP " + resp.status + ")", "");
  }
  if (r.Error && r.Error.Code) {
    throw new ApiError(r.Error.Code, r.Error.Message || "", r.RequestId || "");
  }
  return r;
}
