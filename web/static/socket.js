// A WebSocket to chatd that reconnects by itself and matches replies to requests. It offers batch
// framing (subprotocol chatd.batch, docs/PROTOCOL.md section 1), so a busy socket gets many frames in
// one message.
//
// Events (all CustomEvent, data in `detail`):
//   "state"  {state: "connecting" | "open" | "closed", retryAt: ms epoch or 0, attempt}
//   "frame"  a frame that is not the reply to a pending request (ready, message, receipt, …)
//   "denied" {reason, message} when the server refuses the credential, or ends the session because
//            the token expired (close 1008, reason "token expired"); reconnecting stops.

import { probe } from "./auth.js";

const REQUEST_TIMEOUT = 15000; // ms without a reply before a request fails with "timeout"
const PING_EVERY = 25000;      // ms between application pings while open
const PING_TIMEOUT = 10000;    // ms a ping may take before the socket is taken for dead
const BACKOFF_BASE = 500;      // ms, first reconnect delay (before jitter)
const BACKOFF_MAX = 30000;     // ms, longest reconnect delay (before jitter)
const POLICY = 1008;           // close code of a socket the server ended on purpose
const TOKEN_EXPIRED = "token expired"; // its reason when the token ran out: reconnecting cannot help
const BATCH = "chatd.batch";   // subprotocol in which a message holds one or more frames, separated by "\n"

/** RequestError is how a failed request rejects: `code` is a protocol error code or "disconnected"/"timeout". */
export class RequestError extends Error {
  constructor(code, message, frame) {
    super(message || code);
    this.code = code;
    this.retryAfter = frame && typeof frame.retry_after === "number" ? frame.retry_after : 0;
  }
}

export class Socket extends EventTarget {
  /** @param {{mode: "user"|"token", value: string}} credential */
  constructor(credential) {
    super();
    this.credential = credential;
    this.ws = null;
    this.state = "closed";
    this.attempt = 0;          // consecutive failed connects, drives the backoff
    this.pending = new Map();  // request id -> {resolve, reject, timer}
    this.nextId = 1;
    this.stopped = true;
    this.retryTimer = 0;
    this.retryAt = 0;
    this.pingTimer = 0;
    this.onWake = () => { if (this.state === "closed" && !this.stopped) this.reconnectNow(); };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this.onWake);
    document.addEventListener("visibilitychange", this.onWake);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onWake);
    document.removeEventListener("visibilitychange", this.onWake);
    clearTimeout(this.retryTimer);
    if (this.ws) {
      const ws = this.ws;
      this.closed(ws, 1000);
      ws.close(1000);
    }
  }

  /** reconnectNow skips the rest of the backoff delay. */
  reconnectNow() {
    if (this.stopped || this.state !== "closed") return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const { mode, value } = this.credential;
    return `${scheme}//${location.host}/ws?${mode === "token" ? "token" : "user"}=${encodeURIComponent(value)}`;
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, retryAt: this.retryAt, attempt: this.attempt } }));
  }

  connect() {
    this.retryAt = 0;
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url(), [BATCH]);
    } catch (err) {
      this.scheduleReconnect(1006);
      return;
    }
    this.ws = ws;
    ws.gotReady = false;
    ws.onmessage = (ev) => this.received(ws, ev.data);
    ws.onclose = (ev) => this.closed(ws, ev.code, ev.reason);
  }

  received(ws, data) {
    // With batch framing selected, a message holds one or more frames separated by "\n", which no
    // frame holds raw (JSON escapes it); without it (an older server), a message is one frame.
    const texts = ws.protocol === BATCH && typeof data === "string" ? data.split("\n") : [data];
    for (const text of texts) {
      if (ws !== this.ws) return; // a frame before this one ended the socket
      this.receivedFrame(ws, text);
    }
  }

  receivedFrame(ws, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not ours to judge; the protocol only has JSON text frames
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "ready") {
      ws.gotReady = true;
      this.attempt = 0;
      this.setState("open");
      this.schedulePing();
    }
    const waiter = frame.id != null ? this.pending.get(frame.id) : undefined;
    if (waiter) {
      this.pending.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.type === "error") waiter.reject(new RequestError(frame.code || "internal", frame.message, frame));
      else waiter.resolve(frame);
      return;
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  closed(ws, code, reason = "") {
    if (ws !== this.ws) return;
    ws.onmessage = ws.onclose = null;
    this.ws = null;
    clearTimeout(this.pingTimer);
    for (const [, w] of this.pending) {
      clearTimeout(w.timer);
      w.reject(new RequestError("disconnected", "the connection dropped before the reply"));
    }
    this.pending.clear();
    if (this.stopped) {
      this.setState("closed");
      return;
    }
    if (code === POLICY && reason === TOKEN_EXPIRED) {
      // Any other 1008 (a client too slow to read) is worth a reconnect; an expired token is not.
      this.stop();
      this.setState("closed");
      this.dispatchEvent(new CustomEvent("denied", {
        detail: { reason: "expired", message: "Your session expired: sign in again with a new token." },
      }));
      return;
    }
    if (!ws.gotReady) {
      // A refused upgrade looks like close 1006 to a page: ask the server over plain HTTP why.
      this.checkCredential();
    }
    this.scheduleReconnect(code);
  }

  async checkCredential() {
    const verdict = await probe(this.credential);
    if (!verdict.ok && (verdict.reason === "rejected" || verdict.reason === "expired" || verdict.reason === "forbidden")) {
      this.stop();
      this.dispatchEvent(new CustomEvent("denied", { detail: verdict }));
    }
  }

  scheduleReconnect(code) {
    // Exponential backoff with jitter: half the delay fixed, half random, so a restarted
    // replica (close 1012) is not met by every client in the same instant.
    const base = Math.min(BACKOFF_MAX, BACKOFF_BASE * 2 ** this.attempt);
    const delay = base / 2 + Math.random() * (base / 2);
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.lastCloseCode = code;
    this.setState("closed");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => { if (!this.stopped) this.connect(); }, delay);
  }

  schedulePing() {
    clearTimeout(this.pingTimer);
    this.pingTimer = setTimeout(async () => {
      const ws = this.ws;
      if (!ws || this.state !== "open") return;
      try {
        await this.request({ type: "ping" }, PING_TIMEOUT);
        this.schedulePing();
      } catch (err) {
        if (err.code === "timeout" && ws === this.ws) {
          // No answer: the link is dead even if the browser has not noticed yet.
          this.closed(ws, 1006);
          ws.close();
        }
      }
    }, PING_EVERY);
  }

  /** send writes a frame that expects no reply; false when not connected. */
  send(frame) {
    if (this.state !== "open" || !this.ws) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * request sends a frame and resolves with the reply carrying the same id (frame.id is used
   * when set, so a retried send keeps its id). It rejects with a RequestError on an error
   * reply, when the socket drops first ("disconnected") or after `timeout` ms ("timeout").
   */
  request(frame, timeout = REQUEST_TIMEOUT) {
    if (this.state !== "open" || !this.ws) {
      return Promise.reject(new RequestError("disconnected", "not connected"));
    }
    const id = frame.id != null ? String(frame.id) : `r${this.nextId++}`;
    if (this.pending.has(id)) return Promise.reject(new RequestError("busy", "request already in flight"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new RequestError("timeout", "no reply from the server"));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }
}
