// Credentials: validating a user id, reading a token, asking the server whether it accepts them.

const USER_ID = /^[A-Za-z0-9_.@]{1,64}$/;

/** userIdProblem returns why `id` is not a valid user id, or "" when it is. */
export function userIdProblem(id) {
  if (id === "") return "Enter a user id.";
  if (id.length > 64) return `A user id has at most 64 characters; this one has ${id.length}.`;
  if (!USER_ID.test(id)) {
    const bad = [...new Set([...id].filter((c) => !/[A-Za-z0-9_.@]/.test(c)))];
    const shown = bad.map((c) => (c === " " ? "space" : `“${c}”`)).join(", ");
    return `A user id may only use letters A–Z and a–z, digits, _ . and @ (not ${shown}).`;
  }
  return "";
}

/** cleanToken trims a pasted token and drops a leading "Bearer ". */
export function cleanToken(raw) {
  return raw.trim().replace(/^bearer\s+/i, "").trim();
}

/** tokenClaims decodes a JWT's payload without checking it (only the server can); null if it is not a JWT. */
export function tokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** tokenProblem returns why a token cannot work, as far as the page can tell, or "". */
export function tokenProblem(token) {
  if (token === "") return "Paste a token.";
  const claims = tokenClaims(token);
  if (!claims) return "That is not a token: a token has three parts separated by dots.";
  return ""; // whether it has expired is the server's call: this device's clock may be off

}

/**
 * probe asks the server, over plain HTTP, whether it would upgrade a WebSocket with this credential.
 * A browser cannot see why an upgrade failed (it only gets close 1006), but a GET without upgrade
 * headers gets the real answer: 401 for a bad credential, 426 or 400 (upgrade required) for a good one.
 * Resolves to {ok: true} or {ok: false, reason, message}.
 */
export async function probe({ mode, value }) {
  const param = mode === "token" ? "token" : "user";
  let resp;
  try {
    resp = await fetch(`/ws?${param}=${encodeURIComponent(value)}`, { cache: "no-store", credentials: "same-origin" });
  } catch {
    return { ok: false, reason: "unreachable", message: "The server cannot be reached. Check your connection and try again." };
  }
  if (resp.status === 401) {
    if (mode === "user") {
      const body = (await resp.text().catch(() => "")).toLowerCase();
      if (body.includes("token")) {
        return { ok: false, reason: "rejected", message: "This server needs a token to sign in: choose Token and paste yours." };
      }
      return { ok: false, reason: "rejected", message: "The server rejected this user id." };
    }
    const claims = tokenClaims(value);
    if (claims && typeof claims.exp === "number" && claims.exp * 1000 <= Date.now()) {
      return { ok: false, reason: "expired", message: `Your token expired ${new Date(claims.exp * 1000).toLocaleString()}. Ask for a new one.` };
    }
    return { ok: false, reason: "rejected", message: "The server rejected this token (it is wrong or has expired). Ask for a new one." };
  }
  if (resp.status === 403) {
    return { ok: false, reason: "forbidden", message: "The server does not accept connections from this page's address." };
  }
  if (resp.status >= 500) {
    return { ok: false, reason: "unavailable", message: `The server is not available right now (HTTP ${resp.status}). Try again in a moment.` };
  }
  return { ok: true };
}
