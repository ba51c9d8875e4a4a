// The page: sign-in, the conversation list and the open conversation, drawn from a Chat.
// Every text that comes from a person is put in the page with textContent, never as HTML. A message
// text, a preview or a user id shown on its own sits in an element with dir="auto", isolated by app.css,
// so bidi controls in it cannot reorder the text around it.

import { Chat } from "./chat.js";
import { cleanToken, probe, tokenProblem, userIdProblem } from "./auth.js";
import * as fmt from "./format.js";

const $ = (id) => document.getElementById(id);
const KEY = { mode: "chatd.mode", user: "chatd.user", token: "chatd.token" };
const GROUP_GAP = 5 * 60; // s: a message this close to the previous one from the same person joins its group

let chat = null;
let credential = null;
let renderQueued = false;
let bannerTimer = 0;
let everOpen = false;
let toastTimer = 0;
let shownChat = null;      // user whose messages are in the list now
let forceBottom = false;   // scroll to the newest message on the next render
const drafts = new Map();  // user -> unsent text in the composer
const listNodes = new Map(); // user -> <li>
const msgNodes = new Map();  // key -> <li>

// ---------- small DOM helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (value == null) node.removeAttribute(name);
  else if (node.getAttribute(name) !== String(value)) node.setAttribute(name, value);
}

function avatar(node, user, withDot) {
  node.style.setProperty("--hue", fmt.hue(user));
  const label = fmt.initials(user);
  const first = node.firstChild;
  if (first && first.nodeType === Node.TEXT_NODE) {
    if (first.data !== label) first.data = label;
  } else {
    node.prepend(document.createTextNode(label));
  }
  if (withDot && !node.querySelector(".dot")) {
    node.append(el("span", { class: "dot", role: "img", "data-testid": "conv-presence" }));
  }
}

function presenceDot(dot, online) {
  setAttr(dot, "data-online", online ? "true" : "false");
  setAttr(dot, "aria-label", online ? "online" : "offline");
  setAttr(dot, "title", online ? "Online" : "Offline");
}

/** reorder makes parent's children exactly `nodes`, in order, moving as little as it can. */
function reorder(parent, nodes) {
  let cur = parent.firstChild;
  for (const node of nodes) {
    if (node === cur) {
      cur = cur.nextSibling;
    } else {
      parent.insertBefore(node, cur);
    }
  }
  while (cur) {
    const next = cur.nextSibling;
    cur.remove();
    cur = next;
  }
}

// ---------- storage (either may be unavailable) ----------
// Who is signed in is kept per tab (sessionStorage: it survives a reload and is not shared with other
// tabs), so two tabs can be two people. The last one to sign in anywhere is also kept in localStorage:
// a brand-new tab starts as that person.

function load(key) {
  for (const store of ["sessionStorage", "localStorage"]) {
    try {
      const value = window[store].getItem(key);
      if (value != null) return value;
    } catch { /* private mode: nothing is remembered */ }
  }
  return "";
}

function save(key, value) {
  for (const store of ["sessionStorage", "localStorage"]) {
    try {
      // This tab keeps "" too: signed out here means signed out here, whoever the other tabs are.
      if (value || store === "sessionStorage") window[store].setItem(key, value);
      else window[store].removeItem(key);
    } catch { /* private mode: nothing is remembered */ }
  }
}

// ---------- sign in ----------

const form = $("signin-form");
const submitBtn = form.querySelector('[type="submit"]');

function currentMode() {
  return form.elements.mode.value === "token" ? "token" : "user";
}

function setMode(mode) {
  form.elements.mode.value = mode;
  for (const field of form.querySelectorAll(".field")) field.hidden = field.dataset.mode !== mode;
}

function modeInput() {
  return currentMode() === "token" ? $("signin-token") : $("signin-user");
}

function signinError(message) {
  setText($("signin-error"), message);
  for (const input of [$("signin-user"), $("signin-token")]) input.removeAttribute("aria-invalid");
  if (message) modeInput().setAttribute("aria-invalid", "true");
}

function showSignin(message = "", mode = "") {
  if (chat) chat.stop();
  chat = null;
  credential = null;
  clearTimeout(bannerTimer); // its countdown would read the chat that is gone
  $("banner").hidden = true;
  document.title = "chatd";
  $("app").hidden = true;
  $("signin").hidden = false;
  setMode(mode || load(KEY.mode) || "user");
  $("signin-user").value = load(KEY.user);
  $("signin-token").value = load(KEY.token);
  signinError(message);
  modeInput().focus();
}

form.addEventListener("change", (e) => {
  if (e.target.name !== "mode") return;
  setMode(currentMode());
  save(KEY.mode, currentMode());
  signinError("");
  modeInput().focus();
});

form.addEventListener("input", () => signinError(""));

$("signin-token").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    form.requestSubmit();
  }
});

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const mode = currentMode();
  const value = mode === "token" ? cleanToken($("signin-token").value) : $("signin-user").value.trim();
  signIn({ mode, value });
});

/** refuse shows the sign-in form with `cred` filled in and why it did not work. */
function refuse(cred, message) {
  if ($("signin").hidden) showSignin("", cred.mode);
  modeInput().value = cred.value;
  signinError(message);
  modeInput().focus();
}

async function signIn(cred) {
  const problem = cred.mode === "token" ? tokenProblem(cred.value) : userIdProblem(cred.value);
  if (problem) {
    refuse(cred, problem);
    return;
  }
  signinError("");
  submitBtn.disabled = true;
  setText(submitBtn, "Signing in…");
  const verdict = await probe(cred);
  submitBtn.disabled = false;
  setText(submitBtn, "Sign in");
  // A server that is down right now is not a wrong credential: go in and let the page reconnect.
  if (!verdict.ok && verdict.reason !== "unreachable" && verdict.reason !== "unavailable") {
    refuse(cred, verdict.message);
    return;
  }
  startApp(cred);
}

function remember(cred) {
  save(KEY.mode, cred.mode);
  save(cred.mode === "token" ? KEY.token : KEY.user, cred.value);
}

// ---------- the app ----------

function startApp(cred) {
  credential = cred;
  everOpen = false;
  shownChat = null;
  listNodes.clear();
  msgNodes.clear();
  drafts.clear();
  $("conv-list").replaceChildren();
  $("messages").replaceChildren();
  $("signin").hidden = true;
  $("app").hidden = false;
  $("app").classList.remove("viewing");

  chat = new Chat(cred);
  let remembered = false;
  chat.addEventListener("change", queueRender);
  chat.addEventListener("status", () => {
    // Once per sign-in or page load: a reconnect does not make this tab's user the default for new tabs.
    if (chat.connected && !remembered) {
      remembered = true;
      remember(cred);
    }
    renderBanner();
  });
  chat.addEventListener("notice", (e) => toast(e.detail.text));
  chat.addEventListener("denied", (e) => refuse(cred, e.detail.message));
  chat.setPageVisible(document.visibilityState === "visible");
  chat.start();
  renderBanner();
  render();
}

function signOut() {
  if (credential) save(credential.mode === "token" ? KEY.token : KEY.user, "");
  const mode = credential ? credential.mode : "";
  history.replaceState(null, "", location.pathname + location.search);
  showSignin("", mode);
}

$("signout").addEventListener("click", signOut);

function openConv(user) {
  if (!chat) return;
  saveDraft();
  if (history.state && history.state.conv) history.replaceState({ conv: user }, "");
  else history.pushState({ conv: user }, "");
  chat.open(user);
  $("app").classList.add("viewing");
  render();
  if (matchMedia("(pointer: fine)").matches) $("composer-input").focus();
}

function closeConv(fromHistory) {
  if (!chat) return;
  saveDraft();
  const was = chat.openWith;
  chat.open(null);
  $("app").classList.remove("viewing");
  if (!fromHistory && history.state && history.state.conv) history.back();
  render();
  const item = was && listNodes.get(was);
  if (item) item.firstChild.focus();
}

window.addEventListener("popstate", (e) => {
  if (!chat) return;
  const user = e.state && e.state.conv;
  if (user) {
    chat.open(user);
    $("app").classList.add("viewing");
    render();
  } else if (chat.openWith) {
    closeConv(true);
  }
});

$("chat-back").addEventListener("click", () => closeConv(false));

$("new-chat").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = $("new-chat-input");
  const user = input.value.trim();
  let problem = userIdProblem(user);
  if (!problem && chat && user === chat.me) problem = "That is you: pick someone else.";
  setText($("new-chat-error"), problem);
  setAttr(input, "aria-invalid", problem ? "true" : null);
  if (problem) return;
  input.value = "";
  openConv(user);
});

$("new-chat-input").addEventListener("input", () => {
  setText($("new-chat-error"), "");
  $("new-chat-input").removeAttribute("aria-invalid");
});

document.addEventListener("visibilitychange", () => {
  if (chat) chat.setPageVisible(document.visibilityState === "visible");
});

window.addEventListener("beforeunload", (e) => {
  if (chat && chat.unsent()) {
    e.preventDefault();
    e.returnValue = "";
  }
});

// ---------- composer ----------

const composer = $("composer-input");

function saveDraft() {
  if (!shownChat) return;
  if (composer.value) drafts.set(shownChat, composer.value);
  else drafts.delete(shownChat);
}

function grow() {
  composer.style.height = "auto";
  composer.style.height = `${Math.min(composer.scrollHeight + 2, 160)}px`;
}

composer.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});

composer.addEventListener("input", () => {
  grow();
  setText($("composer-error"), "");
  if (chat && chat.openWith && composer.value.trim() !== "") chat.typing(chat.openWith);
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  if (!chat || !chat.openWith) return;
  const text = composer.value.trim();
  if (text === "") return;
  const problem = chat.send(chat.openWith, text);
  setText($("composer-error"), problem);
  if (problem) return;
  composer.value = "";
  drafts.delete(chat.openWith);
  grow();
  forceBottom = true;
  composer.focus();
});

// ---------- banner and notices ----------

function renderBanner() {
  clearTimeout(bannerTimer);
  queueRender();
  const banner = $("banner");
  if (!chat || chat.connected) {
    if (chat && chat.connected) everOpen = true;
    banner.hidden = true;
    return;
  }
  if (!everOpen && chat.state === "connecting" && banner.hidden) {
    // Do not flash the banner for the first, usually instant, connect.
    bannerTimer = setTimeout(() => { if (chat && !chat.connected) showBanner(); }, 700);
    return;
  }
  showBanner();
}

function showBanner() {
  clearTimeout(bannerTimer);
  const banner = $("banner");
  banner.hidden = false;
  let text;
  if (chat.state === "connecting") {
    text = everOpen ? "Reconnecting…" : "Connecting…";
    $("banner-retry").hidden = true;
  } else {
    const secs = Math.max(0, Math.ceil((chat.retryAt - Date.now()) / 1000));
    text = `Disconnected. Reconnecting${secs > 0 ? ` in ${secs} s` : ""}…`;
    $("banner-retry").hidden = false;
    bannerTimer = setTimeout(showBanner, 1000);
  }
  if (chat.unsent()) text += " Unsent messages go out when it is back.";
  setText($("banner-text"), text);
}

$("banner-retry").addEventListener("click", () => chat && chat.reconnectNow());

function toast(text) {
  const t = $("toast");
  setText(t, text);
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, 5000);
}

// ---------- rendering ----------

function queueRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    render();
  }, 0);
}

function render() {
  if (!chat) return;
  setText($("me"), chat.me);
  avatar($("me-avatar"), chat.me || "?", false);
  renderList();
  renderChat();
  const unread = chat.totalUnread();
  document.title = unread > 0 ? `(${fmt.count(unread)}) chatd` : "chatd";
}

function convItem(user) {
  const av = el("span", { class: "avatar" });
  const btn = el("button", { type: "button", class: "conv", "data-testid": "conv-item", "data-user": user },
    av,
    el("span", { class: "conv-main" },
      el("span", { class: "conv-top" },
        el("span", { class: "conv-name", dir: "auto", "data-testid": "conv-name", text: user }),
        el("time", { class: "conv-time", "data-testid": "conv-time" })),
      el("span", { class: "conv-bottom" },
        el("span", { class: "conv-preview", "data-testid": "conv-preview" },
          el("span", { class: "conv-you" }),
          el("bdi", { class: "conv-text", dir: "auto" })),
        el("span", { class: "badge", "data-testid": "conv-unread", hidden: "" }))));
  avatar(av, user, true);
  btn.addEventListener("click", () => openConv(user));
  const li = el("li", {}, btn);
  listNodes.set(user, li);
  return li;
}

function preview(conv) {
  let latest = conv.last;
  let text = latest ? latest.text : "";
  let mine = latest ? latest.from === chat.me : false;
  let latestTime = latest ? latest.time : 0;
  for (const p of conv.pending.values()) {
    if (p.time >= latestTime) {
      text = p.text;
      mine = true;
      latestTime = p.time;
    }
  }
  if (!text) return { you: "", text: "No messages yet", time: 0 };
  return { you: mine ? "You: " : "", text: text.replace(/\s+/g, " "), time: latestTime };
}

function renderList() {
  const convs = chat.conversations();
  const nodes = convs.map((conv) => {
    const li = listNodes.get(conv.with) || convItem(conv.with);
    const btn = li.firstChild;
    const online = chat.online.get(conv.with) === true;
    presenceDot(btn.querySelector(".dot"), online);
    const unread = conv.unread;
    const badge = btn.querySelector(".badge");
    badge.hidden = unread === 0;
    setText(badge, unread ? fmt.count(unread) : "");
    setAttr(badge, "aria-label", unread ? `${unread} unread` : null);
    btn.classList.toggle("has-unread", unread > 0);
    setAttr(btn, "aria-current", chat.openWith === conv.with ? "true" : null);
    const pv = preview(conv);
    const pvNode = btn.querySelector(".conv-preview");
    setText(pvNode.firstChild, conv.typing ? "" : pv.you);
    setText(pvNode.lastChild, conv.typing ? "typing…" : pv.text);
    pvNode.classList.toggle("typing-now", conv.typing);
    const timeNode = btn.querySelector(".conv-time");
    setText(timeNode, pv.time ? fmt.listTime(pv.time) : "");
    setAttr(timeNode, "datetime", pv.time ? new Date(pv.time * 1000).toISOString() : null);
    return li;
  });
  for (const [user, li] of listNodes) if (!chat.convs.has(user)) { li.remove(); listNodes.delete(user); }
  reorder($("conv-list"), nodes);
  $("conv-empty").hidden = convs.length > 0;
}

function statusOf(item, conv) {
  if (item.pending) return item.pending.state; // queued, sending, failed
  return item.m.seq <= conv.peerRead ? "read" : "sent";
}

const STATUS = {
  queued: ["◷", "Waiting for the connection"],
  sending: ["◷", "Sending"],
  sent: ["✓", "Sent"],
  read: ["✓✓", "Read"],
  failed: ["!", "Not sent"],
};

function messageNode(key, item) {
  const text = el("p", { class: "text", dir: "auto", "data-testid": "message-text" });
  text.textContent = item.text;
  const li = el("li", { class: "msg", "data-testid": "message", "data-key": key, "data-from": item.from },
    el("div", { class: "bubble" },
      text,
      el("div", { class: "meta" },
        el("time", { "data-testid": "message-time" }))));
  if (item.mine) {
    li.classList.add("mine");
    li.querySelector(".meta").append(el("span", { class: "status", role: "img", "data-testid": "message-status" }));
  }
  msgNodes.set(key, li);
  return li;
}

function failedRow(li, item, conv) {
  let row = li.querySelector(".failed-row");
  if (!item.pending || item.pending.state !== "failed") {
    if (row) row.remove();
    return;
  }
  const p = item.pending;
  if (!row) {
    row = el("div", { class: "failed-row" },
      el("span", { class: "failed-why", "data-testid": "message-error" }),
      el("button", { type: "button", class: "link", "data-testid": "message-retry", text: "Retry" }),
      el("button", { type: "button", class: "link", "data-testid": "message-discard", text: "Delete" }));
    row.children[1].addEventListener("click", () => chat.retry(conv.with, p.id));
    row.children[2].addEventListener("click", () => chat.discard(conv.with, p.id));
    li.append(row);
  }
  setText(row.children[0], p.error);
  row.children[1].hidden = !p.retryable;
}

function renderChat() {
  const conv = chat.openConv;
  const scroller = $("scroller");
  $("chat-none").hidden = !!conv;
  document.querySelector(".chat-head").hidden = !conv;
  scroller.hidden = !conv;
  $("composer").hidden = !conv;
  if (!conv) {
    $("typing").hidden = true;
    if (shownChat) {
      $("messages").replaceChildren();
      msgNodes.clear();
      shownChat = null;
    }
    return;
  }

  let switched = false;
  if (shownChat !== conv.with) {
    $("messages").replaceChildren();
    msgNodes.clear();
    shownChat = conv.with;
    switched = true;
    composer.value = drafts.get(conv.with) || "";
    grow();
    setText($("composer-error"), "");
  }

  // Header.
  setText($("chat-title"), conv.with);
  avatar($("chat-avatar"), conv.with, false);
  const online = chat.online.get(conv.with) === true;
  const sub = $("chat-sub");
  sub.classList.toggle("online", online);
  setText(sub, !chat.connected ? "" : online ? "online" : "offline");
  setAttr(sub, "data-online", online ? "true" : "false");
  const typing = $("typing");
  typing.hidden = !conv.typing;
  setText(typing, conv.typing ? `${conv.with} is typing` : "");

  // Top of the history.
  const older = $("older");
  let note = "";
  older.hidden = true;
  if (!conv.loaded) note = chat.connected ? "Loading messages…" : "Messages load when the connection is back.";
  else if (conv.loadingOlder) note = "Loading earlier messages…";
  else if (conv.more) older.hidden = false;
  else if (conv.messages.size > 0) note = `This is the beginning of your conversation with ${conv.with}.`;
  else if (conv.pending.size === 0) note = `No messages yet. Say hello to ${conv.with}!`;
  setText($("history-note"), note);

  // Messages: stored ones by seq, then the ones not stored yet.
  const items = conv.ordered().map((m) => ({ key: `s${m.seq}`, m, from: m.from, mine: m.from === chat.me, text: m.text, time: m.time }));
  const pend = [...conv.pending.values()].sort((a, b) => a.time - b.time);
  for (const p of pend) items.push({ key: `p${p.id}`, pending: p, from: chat.me, mine: true, text: p.text, time: p.time });

  const nodes = [];
  let prev = null;
  for (const item of items) {
    const day = fmt.dayKey(item.time);
    if (!prev || fmt.dayKey(prev.time) !== day) {
      const key = `d${day}`;
      let sep = msgNodes.get(key);
      if (!sep) {
        sep = el("li", { class: "day", role: "separator", "data-key": key }, el("span", { text: fmt.dayLabel(item.time) }));
        msgNodes.set(key, sep);
      }
      nodes.push(sep);
    }
    const li = msgNodes.get(item.key) || messageNode(item.key, item);
    li.classList.toggle("cont", !!prev && prev.from === item.from && item.time - prev.time < GROUP_GAP && fmt.dayKey(prev.time) === day);
    setAttr(li, "data-seq", item.m ? item.m.seq : null);
    const time = li.querySelector("time");
    if (time.dataset.t !== String(item.time)) {
      time.dataset.t = String(item.time);
      time.textContent = fmt.clock(item.time);
      time.dateTime = new Date(item.time * 1000).toISOString();
      time.title = fmt.fullTime(item.time);
    }
    if (item.mine) {
      const state = statusOf(item, conv);
      setAttr(li, "data-state", state);
      const status = li.querySelector(".status");
      setText(status, STATUS[state][0]);
      setAttr(status, "aria-label", STATUS[state][1]);
      setAttr(status, "title", STATUS[state][1]);
      failedRow(li, item, conv);
    }
    nodes.push(li);
    prev = item;
  }
  const keep = new Set(nodes);
  for (const [key, node] of msgNodes) if (!keep.has(node)) msgNodes.delete(key);

  const list = $("messages");
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  const anchor = list.querySelector(".msg");
  const anchorTop = anchor ? anchor.offsetTop : 0;
  reorder(list, nodes);
  if (switched || forceBottom || atBottom) {
    scroller.scrollTop = scroller.scrollHeight;
  } else if (anchor && anchor.isConnected && anchor.offsetTop !== anchorTop) {
    // Older messages came in above: keep what the person was looking at in place.
    scroller.scrollTop += anchor.offsetTop - anchorTop;
  }
  forceBottom = false;

  // A page that does not fill the view cannot be scrolled up to ask for more: ask now.
  if (conv.loaded && conv.more && !conv.loadingOlder && scroller.scrollHeight <= scroller.clientHeight + 40) {
    chat.loadOlder(conv.with);
  }
}

$("scroller").addEventListener("scroll", () => {
  if (chat && chat.openWith && $("scroller").scrollTop < 150) chat.loadOlder(chat.openWith);
}, { passive: true });

$("older").addEventListener("click", () => chat && chat.openWith && chat.loadOlder(chat.openWith));

// ---------- start ----------

function boot() {
  const hash = new URLSearchParams(location.hash.slice(1));
  let cred = null;
  if (hash.has("token")) cred = { mode: "token", value: cleanToken(hash.get("token") || "") };
  else if (hash.has("user")) cred = { mode: "user", value: (hash.get("user") || "").trim() };
  if (cred) {
    // Keep the credential out of the address bar and the browser history.
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    const mode = load(KEY.mode);
    const value = mode === "token" ? load(KEY.token) : mode === "user" ? load(KEY.user) : "";
    if (value) cred = { mode, value };
  }
  if (!cred) {
    showSignin();
    return;
  }
  // Go straight in: if the server refuses the credential, the connection finds out and the
  // sign-in form comes back saying why.
  const problem = cred.mode === "token" ? tokenProblem(cred.value) : userIdProblem(cred.value);
  if (problem) refuse(cred, problem);
  else startApp(cred);
}

boot();
