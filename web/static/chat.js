// The chat model: conversations, messages, the outbox and catching up, on top of a Socket.
// It touches no DOM; the page listens to its events and renders.
//
// Events (CustomEvent, data in `detail`):
//   "change"  {user}: something about conversation `user` changed (user null: the list or the open one)
//   "status"  {state, retryAt}: the connection state, as Socket reports it
//   "notice"  {text}: something the person should be told once
//   "denied"  {reason, message}: the server refuses the credential; the page should sign out

import { Socket } from "./socket.js";
import { tokenClaims } from "./auth.js";

const PAGE = 50;                 // messages per history page when scrolling back
const CATCH_UP_PAGE = 100;       // messages per history page when catching up
const TYPING_SEND_EVERY = 2000;  // ms between two typing frames while typing
const TYPING_SHOW_FOR = 4000;    // ms a typing frame keeps "… is typing" up
const READ_DELAY = 250;          // ms to gather live messages into one read
const GAP_WAIT = 800;            // ms a gap may take to fill by itself before history is asked
const MAX_TEXT_BYTES = 4096;

// Error codes after which a send may be tried again with the same id (docs/PROTOCOL.md 3a).
const RETRYABLE = new Set(["disconnected", "timeout", "unavailable", "internal", "rate_limited", "busy"]);

const encoder = new TextEncoder();

/** textProblem returns why `text` cannot be sent, or "". */
export function textProblem(text) {
  if (text.trim() === "") return "Type a message first.";
  const bytes = encoder.encode(text).length;
  if (bytes > MAX_TEXT_BYTES) return `A message holds at most ${MAX_TEXT_BYTES} bytes; this one has ${bytes}.`;
  return "";
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function normalize(m) {
  return {
    conv: String(m.conv ?? ""),
    seq: Number(m.seq),
    from: String(m.from),
    to: String(m.to),
    text: String(m.text ?? ""),
    time: Number(m.time) || 0,
  };
}

function describe(err) {
  switch (err.code) {
    case "disconnected": return "Not sent: the connection dropped.";
    case "timeout": return "Not sent: the server did not answer.";
    case "rate_limited": return `Too many messages: trying again in ${Math.ceil(err.retryAfter || 1)} s.`;
    case "unavailable": return "Not sent: the server cannot store messages right now.";
    case "too_large": return "Not sent: the message is too large.";
    default: return `Not sent: ${err.message || err.code}.`;
  }
}

/** Conversation is what the page knows of the conversation with one other user. */
export class Conversation {
  constructor(user) {
    this.with = user;
    this.messages = new Map(); // seq -> message; stored ones only
    this.loaded = false;       // the newest page has been fetched at least once
    this.contig = 0;           // once loaded: every message with a seq up to this one is here
    this.more = false;         // once loaded: older messages exist below the lowest one here
    this.loadingOlder = false;
    this.stale = false;        // the server has messages after contig; fetched when opened
    this.last = null;          // newest message known, from the inbox or live
    this.unread = 0;           // the other user's messages I have not read: the server's count, kept up to date live
    this.myRead = 0;           // my read position, as far as this page knows (the server's is never lower)
    this.peerRead = 0;         // the other user's read position: my messages up to it show ✓✓
    this.typingUntil = 0;      // ms epoch until which "… is typing" shows
    this.lastTypingSent = 0;
    this.pending = new Map();  // client id -> {id, text, time, state, error, retryable, autoRetry}
    this.created = Date.now() / 1000;
    this.syncing = null;
    this.syncAgain = false;
    this.readTimer = 0;
  }

  /** unreadAfter counts the other user's messages held here with a seq above `seq`. */
  unreadAfter(seq) {
    let n = 0;
    for (const m of this.messages.values()) if (m.seq > seq && m.from === this.with) n++;
    return n;
  }

  /** newest is the highest seq held here, or 0. */
  get newest() {
    let high = 0;
    for (const seq of this.messages.keys()) if (seq > high) high = seq;
    return high;
  }

  /** lowest is the lowest seq here, or 0. */
  get lowest() {
    let low = 0;
    for (const seq of this.messages.keys()) if (low === 0 || seq < low) low = seq;
    return low;
  }

  /** sortTime orders the conversation list: newest activity first. */
  get sortTime() {
    let t = this.last ? this.last.time : this.created;
    for (const p of this.pending.values()) t = Math.max(t, p.time);
    return t;
  }

  /** ordered returns the stored messages, oldest first. */
  ordered() {
    return [...this.messages.values()].sort((a, b) => a.seq - b.seq);
  }

  get typing() {
    return this.typingUntil > Date.now();
  }
}

export class Chat extends EventTarget {
  /** @param {{mode: "user"|"token", value: string}} credential */
  constructor(credential) {
    super();
    this.credential = credential;
    const claims = credential.mode === "token" ? tokenClaims(credential.value) : null;
    this.me = credential.mode === "user" ? credential.value : String(claims?.sub ?? "");
    this.replica = "";
    this.convs = new Map();   // other user -> Conversation
    this.online = new Map();  // user -> bool, for watched users
    this.openWith = null;
    this.pageVisible = true;
    this.state = "connecting";
    this.retryAt = 0;
    this.sock = new Socket(credential);
    this.sock.addEventListener("frame", (e) => this.onFrame(e.detail));
    this.sock.addEventListener("state", (e) => this.onState(e.detail));
    this.sock.addEventListener("denied", (e) => this.emit("denied", e.detail));
  }

  start() { this.sock.start(); }
  stop() { this.sock.stop(); }
  reconnectNow() { this.sock.reconnectNow(); }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }
  changed(user) { this.emit("change", { user }); }
  notice(text) { this.emit("notice", { text }); }

  get connected() { return this.state === "open"; }
  get openConv() { return this.openWith ? this.convs.get(this.openWith) || null : null; }

  /**
   * conv returns the conversation with `user`, creating it if new; a new one's presence is watched
   * unless `watch` is false (the caller then watches everyone at once).
   */
  conv(user, watch = true) {
    let c = this.convs.get(user);
    if (!c) {
      c = new Conversation(user);
      this.convs.set(user, c);
      if (watch && this.connected) this.watch([user]);
    }
    return c;
  }

  /** conversations returns every conversation, most recent first. */
  conversations() {
    return [...this.convs.values()].sort((a, b) => b.sortTime - a.sortTime || (a.with < b.with ? -1 : 1));
  }

  totalUnread() {
    let n = 0;
    for (const c of this.convs.values()) n += c.unread;
    return n;
  }

  isViewing(conv) {
    return this.pageVisible && this.openWith === conv.with;
  }

  partner(m) {
    return m.from === this.me ? m.to : m.from;
  }

  // ---- connection ----

  onState({ state, retryAt }) {
    this.state = state;
    // Presence is only known while connected; it is asked again after the reconnect.
    if (state !== "open") this.online.clear();
    this.retryAt = retryAt;
    this.emit("status", { state, retryAt });
  }

  onFrame(f) {
    switch (f.type) {
      case "ready": return this.onReady(f);
      case "message": return f.message && this.onMessage(normalize(f.message));
      case "sent": return f.message && this.acked(String(f.id ?? ""), normalize(f.message));
      case "receipt": return this.onReceipt(f);
      case "unread": return this.onUnread(f);
      case "typing": return this.onTyping(String(f.from));
      case "presence": return this.applyPresence(f.online);
      case "resync": return this.syncAll();
      case "error": return this.notice(f.message || `Server error: ${f.code}`);
      default: return undefined; // frames this client does not know are ignored
    }
  }

  onReady(f) {
    if (f.user != null) this.me = String(f.user);
    this.replica = String(f.replica ?? "");
    const unread = f.unread && typeof f.unread === "object" ? f.unread : {};
    // The server's counts include what came live before the reconnect: they replace, never add.
    for (const c of this.convs.values()) c.unread = 0;
    for (const [user, n] of Object.entries(unread)) this.conv(user, false).unread = Number(n) || 0;
    this.changed(null);
    this.afterConnect();
  }

  async afterConnect() {
    // The outbox goes first: a message that was stored just before the socket dropped comes back
    // as the reply to its own id rather than as a stranger in the history.
    const sends = [];
    for (const conv of this.convs.values()) {
      for (const p of conv.pending.values()) {
        if (p.state === "queued" || (p.state === "failed" && p.autoRetry)) sends.push(this.transmit(conv, p));
      }
    }
    await Promise.allSettled(sends);
    await this.syncAll();
  }

  /** syncAll fetches the inbox, re-watches presence and catches the open conversation up. */
  async syncAll() {
    if (!this.connected) return;
    let inbox;
    try {
      inbox = await this.sock.request({ type: "inbox" });
    } catch (err) {
      if (err.code !== "disconnected") this.notice(`Could not load your conversations: ${err.message}`);
      return;
    }
    for (const item of inbox.conversations || []) {
      if (item.with == null) continue;
      const conv = this.conv(String(item.with), false);
      if (item.last) this.noteLast(conv, normalize(item.last));
      this.applyPositions(conv, item);
      if (this.hasGap(conv)) conv.stale = true;
    }
    this.changed(null);
    this.watch([...this.convs.keys()]);
    const open = this.openConv;
    if (open) {
      if (!open.loaded || open.stale) await this.catchUp(open);
      if (this.isViewing(open) && this.connected) this.markRead(open);
    }
  }

  async watch(users) {
    const list = users.filter((u) => u !== this.me);
    for (let i = 0; i < list.length && this.connected; i += 100) {
      try {
        const r = await this.sock.request({ type: "presence", users: list.slice(i, i + 100), watch: true });
        this.applyPresence(r.online);
      } catch {
        return; // a dropped socket re-watches everything after the reconnect
      }
    }
  }

  applyPresence(online) {
    if (!online || typeof online !== "object") return;
    for (const [user, on] of Object.entries(online)) {
      this.online.set(user, !!on);
      this.changed(user);
    }
  }

  // ---- messages ----

  noteLast(conv, m) {
    if (!conv.last || m.seq > conv.last.seq) conv.last = m;
  }

  /** insert stores a message once per (conversation, seq); false if it was already here. */
  insert(conv, m) {
    if (!Number.isInteger(m.seq) || conv.messages.has(m.seq)) return false;
    conv.messages.set(m.seq, m);
    this.noteLast(conv, m);
    if (conv.loaded) while (conv.messages.has(conv.contig + 1)) conv.contig++;
    return true;
  }

  hasGap(conv) {
    return conv.loaded && conv.last != null && conv.last.seq > conv.contig;
  }

  onMessage(m) {
    const conv = this.conv(this.partner(m));
    if (!this.insert(conv, m)) return;
    if (m.from !== this.me) {
      conv.typingUntil = 0;
      // Sending moves the sender's read position to the message: the other user has read mine before it.
      conv.peerRead = Math.max(conv.peerRead, m.seq);
      if (this.isViewing(conv)) this.scheduleRead(conv);
      else if (m.seq > conv.myRead) conv.unread++;
    } else {
      this.movedMyRead(conv, m.seq); // sent from another socket of mine: I have read what I answered
    }
    if (this.hasGap(conv)) this.fillGap(conv);
    this.changed(conv.with);
  }

  acked(id, m) {
    const conv = this.conv(this.partner(m));
    const p = conv.pending.get(id);
    if (p) conv.pending.delete(id);
    this.insert(conv, m);
    this.movedMyRead(conv, m.seq);
    if (this.hasGap(conv)) this.fillGap(conv);
    this.changed(conv.with);
  }

  fillGap(conv) {
    if (conv !== this.openConv) {
      conv.stale = true;
      return;
    }
    // Replies and live frames can cross; give the gap a moment to close before asking history.
    setTimeout(() => {
      if (this.hasGap(conv) && conv === this.openConv && this.connected) this.catchUp(conv);
    }, GAP_WAIT);
  }

  onReceipt(f) {
    const by = String(f.by);
    const seq = Number(f.seq) || 0;
    if (by === this.me) {
      // Read on another device of mine; the `unread` frame that comes with it sets the count.
      const conv = this.convs.get(String(f.with));
      if (conv) this.movedMyRead(conv, seq);
      return;
    }
    const conv = this.convs.get(by);
    if (conv && seq > conv.peerRead) {
      conv.peerRead = seq;
      this.changed(by);
    }
  }

  /** onUnread takes the count another socket of mine left after a read. */
  onUnread(f) {
    if (f.with == null) return;
    const user = String(f.with);
    const n = Number(f.unread) || 0;
    const conv = n > 0 ? this.conv(user) : this.convs.get(user);
    if (!conv) return;
    this.applyPositions(conv, { read: f.read, unread: n });
  }

  /**
   * applyPositions takes the read positions and the count of a server frame (inbox entry, history,
   * read, unread). The count replaces what was counted here; a message from the other user that
   * came after the frame was made, and is held here, stays counted.
   */
  applyPositions(conv, f) {
    const read = Number(f.read);
    if (Number.isInteger(read) && read > conv.myRead) conv.myRead = read;
    const peer = Number(f.peer_read);
    if (Number.isInteger(peer) && peer > conv.peerRead) conv.peerRead = peer;
    if (f.unread != null) {
      let n = Number(f.unread) || 0;
      if (Number.isInteger(read)) {
        // A frame older than a read this page knows of: what was read since is not unread.
        const pos = conv.myRead;
        if (pos > read) n = Math.max(0, n - (conv.unreadAfter(read) - conv.unreadAfter(pos)));
        n = Math.max(n, conv.unreadAfter(pos));
      }
      conv.unread = n;
    }
    this.changed(conv.with);
  }

  /** movedMyRead notes that my read position is at least `seq` (a read elsewhere, or a message of mine). */
  movedMyRead(conv, seq) {
    if (!(seq > conv.myRead)) return;
    conv.myRead = seq;
    // What is left: none after the newest known message; else what is held here, if nothing is missing.
    if (!conv.last || seq >= conv.last.seq) conv.unread = 0;
    else if (conv.loaded && !this.hasGap(conv)) conv.unread = Math.min(conv.unread, conv.unreadAfter(seq));
    this.changed(conv.with);
  }

  onTyping(from) {
    const conv = this.convs.get(from);
    if (!conv) return; // someone not in the list yet: their first message will put them there
    conv.typingUntil = Date.now() + TYPING_SHOW_FOR;
    this.changed(from);
    setTimeout(() => this.changed(from), TYPING_SHOW_FOR + 50);
  }

  // ---- history ----

  /**
   * catchUp fetches the newest page of a conversation the first time, and afterwards pages history
   * back from the newest until it reaches the highest seq held contiguously. Calls made while one
   * runs join it (and make it go round once more).
   */
  catchUp(conv) {
    if (conv.syncing) {
      conv.syncAgain = true;
      return conv.syncing;
    }
    conv.syncing = (async () => {
      try {
        do {
          conv.syncAgain = false;
          await this.settleSends(conv);
          await this.fetchNewest(conv);
        } while (conv.syncAgain && this.connected);
      } catch (err) {
        if (err.code !== "disconnected") this.notice(`Could not load the conversation with ${conv.with}: ${err.message}`);
      } finally {
        conv.syncing = null;
        this.changed(conv.with);
      }
    })();
    return conv.syncing;
  }

  async settleSends(conv) {
    const inflight = [...conv.pending.values()].filter((p) => p.state === "sending").map((p) => p.promise);
    await Promise.allSettled(inflight);
  }

  async fetchNewest(conv) {
    const wasLoaded = conv.loaded;
    let before;
    for (;;) {
      // peek: fetching marks nothing read; markRead does, when the person is looking.
      const frame = { type: "history", with: conv.with, limit: wasLoaded ? CATCH_UP_PAGE : PAGE, peek: true };
      if (before !== undefined) frame.before = before;
      const r = await this.sock.request(frame);
      const msgs = (r.messages || []).map(normalize).filter((m) => Number.isInteger(m.seq));
      let low = 0;
      for (const m of msgs) {
        this.insert(conv, m);
        if (low === 0 || m.seq < low) low = m.seq;
      }
      if (before === undefined) this.applyPositions(conv, r);
      if (!conv.loaded) {
        conv.loaded = true;
        conv.more = !!r.more && low > 1;
        conv.contig = low > 0 ? low - 1 : 0;
        break;
      }
      if (msgs.length === 0 || !r.more || low <= conv.contig + 1) break;
      before = low;
    }
    while (conv.messages.has(conv.contig + 1)) conv.contig++;
    conv.stale = false;
    this.changed(conv.with);
  }

  /** loadOlder fetches the page before the lowest message shown. */
  async loadOlder(user) {
    const conv = this.convs.get(user);
    if (!conv || !conv.loaded || !conv.more || conv.loadingOlder || !this.connected) return;
    conv.loadingOlder = true;
    this.changed(user);
    try {
      const r = await this.sock.request({ type: "history", with: user, before: conv.lowest, limit: PAGE, peek: true });
      const msgs = (r.messages || []).map(normalize);
      for (const m of msgs) this.insert(conv, m);
      if (r.peer_read != null) this.applyPositions(conv, { peer_read: r.peer_read });
      conv.more = !!r.more && msgs.length > 0;
    } catch (err) {
      if (err.code !== "disconnected") this.notice(`Could not load older messages: ${err.message}`);
    } finally {
      conv.loadingOlder = false;
      this.changed(user);
    }
  }

  // ---- what the person does ----

  /** open shows the conversation with `user` (null: none), loading it and marking it read. */
  open(user) {
    this.openWith = user;
    this.changed(null);
    if (!user) return;
    const conv = this.conv(user);
    if (!this.connected) return; // afterConnect loads it
    const work = !conv.loaded || conv.stale || this.hasGap(conv) ? this.catchUp(conv) : Promise.resolve();
    work.then(() => {
      if (this.isViewing(conv) && this.connected) this.markRead(conv);
    });
  }

  setPageVisible(visible) {
    this.pageVisible = visible;
    const open = this.openConv;
    if (visible && open && this.connected) this.markRead(open);
  }

  /** markRead moves my read position to the newest message shown, unless it is there already. */
  markRead(conv) {
    clearTimeout(conv.readTimer);
    const seq = conv.newest;
    if (seq === 0 || (seq <= conv.myRead && conv.unread === 0)) return; // nothing new to have read
    conv.unread = conv.unreadAfter(seq);
    this.changed(conv.with);
    this.sock.request({ type: "read", with: conv.with, seq }).then(
      (r) => { if (r.with == null || String(r.with) === conv.with) this.applyPositions(conv, r); },
      () => {}, // a dropped socket reads again when it is back and the conversation is in view
    );
  }

  scheduleRead(conv) {
    clearTimeout(conv.readTimer);
    conv.readTimer = setTimeout(() => {
      if (this.isViewing(conv) && this.connected) this.markRead(conv);
    }, READ_DELAY);
  }

  /** send queues `text` for `user` and sends it when connected; returns a problem to show, or "". */
  send(user, text) {
    const problem = textProblem(text);
    if (problem) return problem;
    const conv = this.conv(user);
    const p = { id: newId(), text, time: Date.now() / 1000, state: "queued", error: "", retryable: true, autoRetry: false, promise: null };
    conv.pending.set(p.id, p);
    conv.lastTypingSent = 0;
    if (this.connected) this.transmit(conv, p);
    else this.changed(user);
    return "";
  }

  transmit(conv, p) {
    if (p.state === "sending") return p.promise;
    p.state = "sending";
    p.error = "";
    p.autoRetry = false;
    this.changed(conv.with);
    p.promise = this.sock.request({ type: "send", to: conv.with, text: p.text, id: p.id }).then(
      (r) => { if (r.message) this.acked(p.id, normalize(r.message)); },
      (err) => {
        if (conv.pending.get(p.id) !== p || p.state !== "sending") return;
        p.state = "failed";
        p.code = err.code;
        p.retryable = RETRYABLE.has(err.code);
        p.error = describe(err);
        // The same id makes a resend safe: it returns the stored message if there is one.
        p.autoRetry = err.code === "disconnected";
        if (err.code === "rate_limited") {
          setTimeout(() => { if (p.state === "failed") this.retry(conv.with, p.id); }, Math.max(1, err.retryAfter) * 1000);
        }
        this.changed(conv.with);
      },
    );
    return p.promise;
  }

  /** retry sends a failed message again with the same id, so it is never stored twice. */
  retry(user, id) {
    const conv = this.convs.get(user);
    const p = conv && conv.pending.get(id);
    if (!p || p.state === "sending") return;
    if (this.connected) {
      this.transmit(conv, p);
    } else {
      p.state = "queued";
      p.error = "";
      this.changed(user);
    }
  }

  /** discard drops a message that was not sent. */
  discard(user, id) {
    const conv = this.convs.get(user);
    if (conv && conv.pending.delete(id)) this.changed(user);
  }

  /** typing tells `user` that I am typing, at most every two seconds. */
  typing(user) {
    const conv = this.conv(user);
    const now = Date.now();
    if (now - conv.lastTypingSent < TYPING_SEND_EVERY) return;
    if (this.sock.send({ type: "typing", to: user })) conv.lastTypingSent = now;
  }

  /** unsent reports whether some message has not reached the server yet. */
  unsent() {
    for (const c of this.convs.values()) if (c.pending.size > 0) return true;
    return false;
  }
}
