// End-to-end test of the browser client: two people chat through a real chatd server and Redis,
// in headless Chromium. Needs REDIS_URL (e.g. redis://127.0.0.1:6379/0), Go, and /usr/bin/chromium.
//
//   REDIS_URL=redis://127.0.0.1:6379/0 bash e2e/browser/run.sh

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shots = path.join(here, "screenshots");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const XSS = "<img src=x onerror=alert(1)>";

// The test's keys are found and deleted with redis-cli (Debian's redis-tools).
async function scanKeys(url, pattern) {
  const { stdout } = await promisify(execFile)("redis-cli", ["-u", url, "--scan", "--pattern", pattern],
    { maxBuffer: 64 << 20 });
  return stdout.split("\n").filter(Boolean);
}

async function deleteKeys(url, pattern) {
  const keys = await scanKeys(url, pattern);
  for (let i = 0; i < keys.length; i += 500) {
    await promisify(execFile)("redis-cli", ["-u", url, "UNLINK", ...keys.slice(i, i + 500)]);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const tid = (id) => `[data-testid="${id}"]`;

let tmp;
let bin;
let port;
let prefix;
let server;       // the running chatd: {proc, log, exited}
let browser;
const pages = {}; // name -> page, for screenshots when something fails
const problems = []; // uncaught page errors and dialogs: any is a failure

// ---------- the server ----------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function startServer(at = port, ...extra) {
  const args = ["-addr", `127.0.0.1:${at}`, "-redis", process.env.REDIS_URL, "-prefix", prefix,
    "-drain-delay", "0", "-drain-window", "0", ...extra];
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  const s = { proc, port: at, log: [], code: null };
  const keep = (chunk) => {
    s.log.push(...chunk.toString().split("\n").filter(Boolean));
    if (s.log.length > 400) s.log.splice(0, s.log.length - 400);
  };
  proc.stdout.on("data", keep);
  proc.stderr.on("data", keep);
  s.exited = new Promise((resolve) => proc.once("exit", (code, signal) => {
    s.code = code;
    s.signal = signal;
    resolve(code);
  }));
  return s;
}

async function waitReady(s, timeout = 30000) {
  const end = Date.now() + timeout;
  while (Date.now() < end) {
    if (s.code !== null) throw new Error(`chatd exited with code ${s.code} before it was ready:\n${s.log.join("\n")}`);
    try {
      const resp = await fetch(`http://127.0.0.1:${s.port}/readyz`);
      if (resp.status === 200) return;
    } catch { /* not listening yet */ }
    await sleep(100);
  }
  throw new Error(`chatd was not ready after ${timeout} ms:\n${s.log.join("\n")}`);
}

async function stopServer(s, timeout = 15000) {
  if (!s || s.code !== null) return s ? s.code : null;
  s.proc.kill("SIGTERM");
  const code = await Promise.race([s.exited, sleep(timeout).then(() => "timeout")]);
  if (code === "timeout") {
    s.proc.kill("SIGKILL");
    await s.exited;
    throw new Error(`chatd did not stop within ${timeout} ms of SIGTERM:\n${s.log.slice(-40).join("\n")}`);
  }
  return code;
}

/** newSecret is a token secret: 32 random bytes as 64 hex characters (the server wants 32 bytes or more). */
function newSecret() {
  return crypto.randomBytes(32).toString("hex");
}

/** mint makes a token with the server's own command. */
async function mint(secret, user, ttl) {
  const { stdout } = await promisify(execFile)(bin, ["token", "-user", user, "-ttl", ttl, "-secret", secret]);
  return stdout.trim();
}

/** jwt signs an HS256 token, for tokens the server's own command would refuse to make (expired ones). */
function jwt(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${crypto.createHmac("sha256", secret).update(body).digest("base64url")}`;
}

// ---------- pages ----------

async function newPage(context, name) {
  const page = await context.newPage();
  page.on("pageerror", (err) => problems.push(`${name}: uncaught ${err.message}`));
  page.on("dialog", (d) => {
    problems.push(`${name}: a ${d.type()} dialog opened: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  pages[name] = page;
  return page;
}

/** waitFor polls `check` (returning [ok, detail]) until ok, or fails saying what it last saw. */
async function waitFor(what, check, timeout = 20000) {
  const end = Date.now() + timeout;
  let detail;
  for (;;) {
    try {
      const [ok, d] = await check();
      if (ok) return d;
      detail = d;
    } catch (err) {
      detail = err.message;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}; last seen: ${JSON.stringify(detail)}`);
    await sleep(100);
  }
}

/** messages lists the message bubbles of the open conversation, top to bottom. */
function messages(page) {
  return page.$$eval(`${tid("message-list")} > ${tid("message")}`, (els) => els.map((e) => ({
    seq: e.dataset.seq ? Number(e.dataset.seq) : null,
    from: e.dataset.from,
    state: e.dataset.state || "",
    text: e.querySelector('[data-testid="message-text"]').textContent,
  })));
}

function convItem(page, user) {
  return page.locator(`${tid("conv-item")}[data-user="${user}"]`);
}

async function presenceOf(page, user) {
  return convItem(page, user).locator(tid("conv-presence")).getAttribute("data-online");
}

async function unreadOf(page, user) {
  const badge = convItem(page, user).locator(tid("conv-unread"));
  return (await badge.isVisible()) ? (await badge.textContent()).trim() : "";
}

async function send(page, text) {
  const input = page.locator(tid("composer-input"));
  await input.fill(text);
  await input.press("Enter");
}

/** sendAndWait sends `text` and waits until the server has acknowledged it. */
async function sendAndWait(page, text) {
  await send(page, text);
  await waitFor(`"${text}" to be sent`, async () => {
    const m = (await messages(page)).filter((x) => x.text === text);
    return [m.length === 1 && (m[0].state === "sent" || m[0].state === "read"), m];
  });
}

async function bannerVisible(page) {
  return page.locator(tid("conn-banner")).isVisible();
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(shots, `${name}.png`) });
}

// ---------- setup and teardown ----------

before(async () => {
  if (!process.env.REDIS_URL) {
    throw new Error("REDIS_URL is not set: this test needs a Redis, e.g. REDIS_URL=redis://127.0.0.1:6379/0");
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: install Debian's chromium package`);
  fs.mkdirSync(shots, { recursive: true });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), "chatd-e2e-"));
  bin = path.join(tmp, "chatd");
  await promisify(execFile)("go", ["build", "-o", bin, "./cmd/chatd"], { cwd: root, timeout: 300000 });
  port = await freePort();
  prefix = `e2e-browser-${process.pid}-${Date.now().toString(36)}:`;
  server = startServer();
  await waitReady(server);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});

after(async () => {
  for (const [name, page] of Object.entries(pages)) {
    if (!page.isClosed()) await shot(page, `last-${name}`).catch(() => {});
  }
  if (browser) await browser.close().catch(() => {});
  let stopErr;
  try {
    await stopServer(server);
  } catch (err) {
    stopErr = err;
  }
  if (process.env.REDIS_URL && prefix) {
    await deleteKeys(process.env.REDIS_URL, `${prefix}*`);
    assert.deepEqual(await scanKeys(process.env.REDIS_URL, `${prefix}*`), [], "keys left in Redis after cleanup");
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (stopErr) throw stopErr;
});

// ---------- the scenario ----------

test("two people chat in the browser through a server restart", { timeout: 240000 }, async (t) => {
  const base = `http://127.0.0.1:${port}`;
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const sent = []; // every text sent in the conversation between 23 and 43, in the order sent

  // 23 signs in with the form (after a wrong id), 43 with a #user= link.
  const p23 = await newPage(desktop, "23-desktop");
  await p23.goto(base);
  await p23.locator(tid("signin-user")).fill("twenty three");
  await p23.locator(tid("signin-submit")).click();
  assert.match(await p23.locator(tid("signin-error")).textContent(), /letters/);
  await shot(p23, "signin-desktop");
  await p23.locator(tid("signin-user")).fill("23");
  await p23.locator(tid("signin-submit")).click();
  await p23.locator(tid("app")).waitFor();
  assert.equal((await p23.locator(tid("me")).textContent()).trim(), "23");

  let p43 = await newPage(phone, "43-phone");
  await p43.goto(`${base}/#user=43`);
  await p43.locator(tid("app")).waitFor();
  assert.equal(new URL(p43.url()).hash, "", "the credential is taken out of the address bar");

  await t.test("23 starts a conversation and sees 43 online", async () => {
    await p23.locator(tid("new-chat-input")).fill("43");
    await p23.locator(tid("new-chat-input")).press("Enter");
    await waitFor("the conversation with 43 to open", async () => [(await p23.locator(tid("chat-title")).textContent()) === "43"]);
    await waitFor("43's presence dot to turn on", async () => [(await presenceOf(p23, "43")) === "true"]);
  });

  await t.test("they chat both ways, with read marks and typing", async () => {
    await sendAndWait(p23, "Hello 43, this is 23");
    sent.push("Hello 43, this is 23");
    await waitFor("23 in 43's list with 1 unread", async () => [(await unreadOf(p43, "23")) === "1", await unreadOf(p43, "23")]);
    await convItem(p43, "23").click();
    await waitFor("43 to see the message", async () => {
      const m = await messages(p43);
      return [m.some((x) => x.text === "Hello 43, this is 23" && x.from === "23"), m];
    });
    await waitFor("23's message to be marked read", async () => {
      const m = await messages(p23);
      return [m.length === 1 && m[0].state === "read", m];
    });

    await p43.locator(tid("composer-input")).click();
    await p43.locator(tid("composer-input")).pressSequentially("Hi 23! Nice to", { delay: 60 });
    await waitFor("23 to see that 43 is typing", async () => {
      const typing = p23.locator(tid("typing-indicator"));
      return [(await typing.isVisible()) && (await typing.textContent()).includes("43 is typing")];
    });
    await p43.locator(tid("composer-input")).pressSequentially(" meet you", { delay: 20 });
    await p43.locator(tid("composer-input")).press("Shift+Enter");
    await p43.locator(tid("composer-input")).pressSequentially("Second line", { delay: 10 });
    await p43.locator(tid("composer-input")).press("Enter");
    const reply = "Hi 23! Nice to meet you\nSecond line";
    sent.push(reply);
    await waitFor("23 to get 43's two-line reply", async () => {
      const m = await messages(p23);
      return [m.some((x) => x.text === reply && x.from === "43"), m];
    });
    await waitFor("the typing indicator to go away", async () => [!(await p23.locator(tid("typing-indicator")).isVisible())]);
    await waitFor("43's reply to be marked read by 23", async () => {
      const m = await messages(p43);
      return [m.find((x) => x.text === reply)?.state === "read", m];
    });
  });

  await t.test("43 leaves, 23 writes three messages, 43 comes back to 3 unread", async () => {
    await p43.close();
    await waitFor("43's presence dot to turn off", async () => [(await presenceOf(p23, "43")) === "false"]);
    assert.equal((await p23.locator(tid("chat-presence")).textContent()).trim(), "offline");
    for (const text of ["Are you there?", "I have news", "Call me back"]) {
      await sendAndWait(p23, text);
      sent.push(text);
    }
    p43 = await newPage(phone, "43-phone");
    await p43.goto(base); // signs in again from what the page remembered
    await p43.locator(tid("app")).waitFor();
    await waitFor("an unread badge of 3 for 23", async () => [(await unreadOf(p43, "23")) === "3", await unreadOf(p43, "23")]);
    await waitFor("43's presence dot to turn on again", async () => [(await presenceOf(p23, "43")) === "true"]);
    await shot(p43, "43-phone-list");
    await convItem(p43, "23").click();
    await waitFor("43 to see all four of 23's messages", async () => {
      const m = await messages(p43);
      return [m.filter((x) => x.from === "23").length === 4, m];
    });
    await waitFor("all of 23's messages to be marked read", async () => {
      const m = (await messages(p23)).filter((x) => x.from === "23");
      return [m.length === 4 && m.every((x) => x.state === "read"), m];
    });
    await waitFor("43's badge to clear", async () => [(await unreadOf(p43, "23")) === ""]);
  });

  await t.test("the server restarts mid-conversation and nothing is lost or doubled", async () => {
    await sendAndWait(p23, "Before the restart");
    sent.push("Before the restart");
    // One message races the shutdown: its reply may or may not come before the socket closes.
    await send(p43, "Racing the restart");
    sent.push("Racing the restart");
    const code = await stopServer(server);
    assert.equal(code, 0, `chatd should exit 0 on SIGTERM:\n${server.log.slice(-20).join("\n")}`);
    await waitFor("both pages to show they are disconnected", async () => [(await bannerVisible(p23)) && (await bannerVisible(p43))]);
    await shot(p23, "23-desktop-disconnected");

    await send(p23, "Written while the server was down");
    sent.push("Written while the server was down");
    await send(p43, "Me too, while down");
    sent.push("Me too, while down");
    await waitFor("the offline messages to wait for the connection", async () => {
      const m = await messages(p23);
      const last = m[m.length - 1];
      return [last.text === "Written while the server was down" && last.state === "queued", last];
    });

    server = startServer();
    await waitReady(server);
    await waitFor("both pages to reconnect", async () => [!(await bannerVisible(p23)) && !(await bannerVisible(p43))], 30000);
    await sendAndWait(p23, "After the restart");
    sent.push("After the restart");
    await sendAndWait(p43, "Welcome back");
    sent.push("Welcome back");

    for (const page of [p23, p43]) {
      await waitFor("every message exactly once, stored, with no gap", async () => {
        const m = await messages(page);
        const texts = m.map((x) => x.text);
        const complete = sent.every((s) => texts.filter((x) => x === s).length === 1) && m.length === sent.length;
        const stored = m.every((x, i) => x.seq === i + 1);
        const settled = m.every((x) => !["queued", "sending", "failed"].includes(x.state));
        return [complete && stored && settled, m];
      }, 30000);
    }
    const seen23 = (await messages(p23)).map((x) => `${x.seq}:${x.from}:${x.text}`);
    const seen43 = (await messages(p43)).map((x) => `${x.seq}:${x.from}:${x.text}`);
    assert.deepEqual(seen43, seen23, "both people see the same conversation");

    // A fresh page reads the conversation from the server: it must hold the same, once each.
    const fresh = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "23-fresh");
    await fresh.goto(`${base}/#user=23`);
    await convItem(fresh, "43").click();
    await waitFor("the stored conversation to match", async () => {
      const m = (await messages(fresh)).map((x) => `${x.seq}:${x.from}:${x.text}`);
      return [JSON.stringify(m) === JSON.stringify(seen23), m];
    });
    await fresh.context().close();
    delete pages["23-fresh"];
  });

  await t.test("markup in a message is shown as text", async () => {
    await sendAndWait(p23, XSS);
    sent.push(XSS);
    await waitFor("43 to get the message", async () => {
      const m = await messages(p43);
      return [m[m.length - 1]?.text === XSS, m[m.length - 1]];
    });
    for (const page of [p23, p43]) {
      const last = page.locator(`${tid("message-list")} > ${tid("message")}`).last().locator(tid("message-text"));
      assert.equal(await last.textContent(), XSS);
      assert.equal(await page.locator(`${tid("message-list")} img`).count(), 0, "no <img> element in the message list");
    }
    await sleep(300); // an onerror handler, had one been created, would have run by now
  });

  await t.test("screenshots", async () => {
    await sendAndWait(p43, "Looks good on my phone");
    await shot(p23, "23-desktop-chat");
    await shot(p43, "43-phone-chat");
    await p43.locator(tid("chat-back")).click();
    await convItem(p43, "23").waitFor();
    await shot(p43, "43-phone-list-after");
  });

  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

/** seed sends `n` messages "Message 1".."Message n" from `from` to `to` over a WebSocket of its own. */
async function seed(page, from, to, n) {
  await page.evaluate(async ({ from, to, n }) => {
    const ws = new WebSocket(`ws://${location.host}/ws?user=${from}`);
    const waiting = new Map();
    await new Promise((resolve, reject) => {
      ws.onerror = () => reject(new Error("seed socket failed"));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === "ready") resolve();
        const w = waiting.get(f.id);
        if (w) {
          waiting.delete(f.id);
          w(f);
        }
      };
    });
    for (let i = 1; i <= n; i++) {
      const id = `seed-${from}-${i}`;
      for (;;) {
        const reply = await new Promise((resolve) => {
          waiting.set(id, resolve);
          ws.send(JSON.stringify({ type: "send", to, text: `Message ${i}`, id }));
        });
        if (reply.type === "sent") break;
        if (reply.code !== "rate_limited") throw new Error(`seed: ${JSON.stringify(reply)}`);
        await new Promise((r) => setTimeout(r, (reply.retry_after || 0.1) * 1000));
      }
    }
    ws.close(1000);
  }, { from, to, n });
}

test("a long conversation scrolls back through history", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const seeder = await newPage(context, "77-seeder");
  await seeder.goto(`${base}/icon.svg`);
  await seed(seeder, "77", "88", 75);
  await seeder.close();
  delete pages["77-seeder"];

  const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "88-desktop");
  await page.goto(`${base}/#user=88`);
  await waitFor("75 unread from 77", async () => [(await unreadOf(page, "77")) === "75", await unreadOf(page, "77")]);
  await convItem(page, "77").click();
  await waitFor("the newest page (26 to 75)", async () => {
    const seqs = (await messages(page)).map((x) => x.seq);
    return [seqs.length === 50 && seqs[0] === 26 && seqs[49] === 75, seqs];
  });
  const scroller = page.locator(tid("message-scroll"));
  assert.ok(await scroller.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 2), "opens at the newest message");
  await scroller.evaluate((el) => { el.scrollTop = 0; });
  await waitFor("the older page to come in above", async () => {
    const m = await messages(page);
    return [m.length === 75 && m.every((x, i) => x.seq === i + 1 && x.text === `Message ${i + 1}`), m.map((x) => x.seq)];
  });
  await waitFor("the start of the conversation to be marked", async () => [/beginning/.test(await page.locator(tid("history-note")).textContent())]);
  const top = await scroller.evaluate((el) => el.scrollTop);
  assert.ok(top > 200, `the view stays on the messages it showed (scrollTop ${top})`);
  await shot(page, "88-desktop-history");
  await page.context().close();
  delete pages["88-desktop"];
  await context.close();
});

test("a failed send is retried with the same id and stored once", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const page = await newPage(context, "91-phone");
  // Stand between the page and the server to make the failures happen on cue.
  let mode = "pass";
  let lost = "";
  const sendIds = [];
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((msg) => {
      const f = JSON.parse(msg);
      if (f.type === "send") sendIds.push(f.id);
      if (f.type === "send" && mode === "refuse") {
        mode = "pass";
        ws.send(JSON.stringify({ type: "error", id: f.id, code: "unavailable", message: "storage unavailable" }));
        return;
      }
      if (f.type === "send" && mode === "lose-reply") {
        mode = "dropping";
        lost = f.id;
      }
      server.send(msg);
    });
    server.onMessage((msg) => {
      const frames = frameTexts(msg).map((t) => JSON.parse(t));
      if (mode === "dropping" && frames.some((f) => f.type === "sent" && f.id === lost)) {
        // Stored, but the socket goes before the reply reaches the page.
        mode = "pass";
        ws.close({ code: 1012, reason: "service restart" });
        return;
      }
      ws.send(msg);
    });
  });
  await page.goto(`${base}/#user=91`);
  await page.locator(tid("app")).waitFor();
  await page.locator(tid("new-chat-input")).fill("92");
  await page.locator(tid("new-chat-submit")).click();
  await page.locator(tid("composer-input")).waitFor();
  await waitFor("the empty conversation to load", async () => [/No messages yet/.test(await page.locator(tid("history-note")).textContent())]);

  mode = "refuse";
  await send(page, "Refused the first time");
  await waitFor("the send to show as failed with a retry", async () => {
    const m = await messages(page);
    return [m.length === 1 && m[0].state === "failed" && (await page.locator(tid("message-retry")).isVisible()), m];
  });
  await shot(page, "91-phone-failed");
  await page.locator(tid("message-retry")).click();
  await waitFor("the retry to be stored", async () => {
    const m = await messages(page);
    return [m.length === 1 && m[0].seq === 1 && m[0].state === "sent", m];
  });
  assert.equal(new Set(sendIds).size, 1, `the retry reuses the id: ${sendIds}`);

  mode = "lose-reply";
  await send(page, "Stored but the reply was lost");
  await waitFor("the lost reply to be recovered", async () => {
    const m = await messages(page);
    return [mode === "pass" && m.length === 2 && m[1].seq === 2 && m[1].state === "sent", m];
  }, 20000);
  assert.equal(sendIds.filter((id) => id === lost).length, 2, "the message was sent again with the same id");

  // The server holds each message once.
  const fresh = await newPage(await browser.newContext(), "91-fresh");
  await fresh.goto(`${base}/#user=91`);
  await convItem(fresh, "92").click();
  await waitFor("the stored conversation to hold each message once", async () => {
    const m = (await messages(fresh)).map((x) => `${x.seq}:${x.text}`);
    return [JSON.stringify(m) === JSON.stringify(["1:Refused the first time", "2:Stored but the reply was lost"]), m];
  });
  await fresh.context().close();
  delete pages["91-fresh"];
  await context.close();
  delete pages["91-phone"];
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

// Texts that try to escape their bubble: a right-to-left override (U+202E) that would run
// everything after it backwards, 2000 combining accents stacked on one letter (thousands of
// pixels tall), and a word too long for any line.
const HOSTILE = {
  before: "Plain text before the override",
  rlo: "\u202ERLO: this runs backwards",
  after: "Plain text after the override",
  rtl: "שלום!",
  long: "Pneumonoultramicroscopicsilicovolcanoconiosis".repeat(7),
  zalgo: `Z${"\u0301".repeat(2000)}`,
};

/** textOf finds the text element of the message whose text is `text`. */
function textOf(page, text) {
  return page.locator(tid("message-text")).filter({ hasText: text.slice(0, 20) }).first();
}

/**
 * paintsOutside tells whether `text` puts any pixel outside `box` within `region`: it compares two
 * screenshots of the region, with the text shown and hidden, and with `box` masked out of both.
 * Layout boxes cannot tell: stacked accents paint far outside the line box without changing it.
 */
async function paintsOutside(page, text, box, region) {
  const clip = await region.boundingBox();
  const take = () => page.screenshot({ clip, mask: [box], animations: "disabled", caret: "hide" });
  // Something else in the region may change meanwhile (a delivery tick, a
  // badge): only a pair taken while the region held still counts.
  for (let tries = 0; ; tries++) {
    const shown = await take();
    await text.evaluate((e) => { e.style.visibility = "hidden"; });
    const hidden = await take();
    await text.evaluate((e) => { e.style.visibility = ""; });
    const again = await take();
    if (shown.equals(again) || tries === 5) return !shown.equals(hidden);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** notIsolated lists the elements matching `selector` that are not dir="auto" with unicode-bidi: isolate. */
function notIsolated(page, selector) {
  return page.$$eval(selector, (els) => {
    if (els.length === 0) return ["no element matches"];
    return els
      .filter((e) => e.getAttribute("dir") !== "auto" || getComputedStyle(e).unicodeBidi !== "isolate")
      .map((e) => `${e.className || e.id}: dir=${e.getAttribute("dir")} unicode-bidi=${getComputedStyle(e).unicodeBidi}`);
  });
}

/** checkHostile asserts that every hostile text in the open conversation stays in its place. */
async function checkHostile(page) {
  const selectors = [tid("message-text"), tid("chat-title"), tid("me")];
  if (await page.locator(tid("conv-list")).isVisible()) selectors.push(tid("conv-name"), `${tid("conv-preview")} bdi`);
  for (const selector of selectors) {
    assert.deepEqual(await notIsolated(page, selector), [], `text from people in ${selector} is isolated`);
  }

  // Every text, and its painted glyphs, stay inside its bubble, and every bubble inside the list.
  const escapes = await page.$$eval(`${tid("message-list")} > ${tid("message")}`, (els) => {
    const list = document.querySelector('[data-testid="message-list"]').getBoundingClientRect();
    const out = [];
    for (const li of els) {
      const text = li.querySelector('[data-testid="message-text"]');
      const bubble = text.closest(".bubble").getBoundingClientRect();
      const range = document.createRange();
      range.selectNodeContents(text);
      const glyphs = range.getBoundingClientRect();
      const inside = (a, b) => a.left >= b.left - 0.5 && a.right <= b.right + 0.5 && a.top >= b.top - 0.5 && a.bottom <= b.bottom + 0.5;
      const name = text.textContent.slice(0, 30);
      if (!inside(glyphs, bubble)) out.push(`${name}: glyphs ${JSON.stringify(glyphs)} outside bubble ${JSON.stringify(bubble)}`);
      if (text.scrollWidth > text.clientWidth) out.push(`${name}: scrollWidth ${text.scrollWidth} > clientWidth ${text.clientWidth}`);
      if (bubble.left < list.left - 0.5 || bubble.right > list.right + 0.5) out.push(`${name}: bubble ${bubble.left}..${bubble.right} outside list ${list.left}..${list.right}`);
    }
    return out;
  });
  assert.deepEqual(escapes, [], "texts stay inside their bubbles");

  // Reading order: where the first and the last character of a text are painted.
  const ends = (loc) => loc.evaluate((e) => {
    const node = e.firstChild;
    const at = (i) => {
      const r = document.createRange();
      r.setStart(node, i);
      r.setEnd(node, i + 1);
      return r.getBoundingClientRect().left;
    };
    return { first: at(0), last: at(node.data.length - 1) };
  });
  for (const text of [HOSTILE.before, HOSTILE.after]) {
    const { first, last } = await ends(textOf(page, text));
    assert.ok(first < last, `"${text}" still reads left to right (first character at ${first}, last at ${last})`);
  }
  const rloTime = textOf(page, HOSTILE.rlo).locator("xpath=..").locator(tid("message-time"));
  const time = await ends(rloTime);
  assert.ok(time.first < time.last, `the override's own timestamp reads left to right (${JSON.stringify(time)})`);
  // dir="auto": a Hebrew text runs right to left, so its "!" ends up at its left end.
  const rtl = await ends(textOf(page, HOSTILE.rtl));
  assert.ok(rtl.last < rtl.first, `"${HOSTILE.rtl}" runs right to left (first character at ${rtl.first}, "!" at ${rtl.last})`);

  // The accents really do reach far outside the line; none of it may show outside the bubble.
  const zalgo = page.locator(`${tid("message-list")} > ${tid("message")}`).last().locator(tid("message-text"));
  assert.equal(await zalgo.textContent(), HOSTILE.zalgo);
  const { ink, height } = await zalgo.evaluate((e) => {
    const ctx = document.createElement("canvas").getContext("2d");
    ctx.font = getComputedStyle(e).font;
    const m = ctx.measureText(e.textContent);
    return { ink: m.actualBoundingBoxAscent + m.actualBoundingBoxDescent, height: e.closest(".bubble").getBoundingClientRect().height };
  });
  assert.ok(ink > 3 * height, `the stacked accents paint ${ink} px, far more than the ${height} px bubble`);
  const bubble = zalgo.locator("xpath=ancestor::*[contains(@class,'bubble')][1]");
  assert.equal(await paintsOutside(page, zalgo, bubble, page.locator(tid("message-scroll"))), false,
    "the stacked accents paint nothing outside their bubble");
}

test("hostile text stays inside its bubble and cannot reorder the text around it", { timeout: 90000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const sender = await newPage(desktop, "51-desktop");
  await sender.goto(`${base}/#user=51`);
  await sender.locator(tid("app")).waitFor();
  await sender.locator(tid("new-chat-input")).fill("52");
  await sender.locator(tid("new-chat-input")).press("Enter");
  await waitFor("the empty conversation to load", async () => [/No messages yet/.test(await sender.locator(tid("history-note")).textContent())]);
  for (const text of Object.values(HOSTILE)) await sendAndWait(sender, text);
  await checkHostile(sender);
  // The list shows the last text as a preview: it too stays in its place.
  const preview = convItem(sender, "52").locator(tid("conv-preview"));
  assert.equal(await preview.textContent(), `You: ${HOSTILE.zalgo}`);
  assert.equal(await paintsOutside(sender, preview.locator("bdi"), preview, sender.locator(tid("conv-list"))), false,
    "the preview's accents paint nothing outside the preview");

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  const receiver = await newPage(phone, "52-phone");
  await receiver.goto(`${base}/#user=52`);
  await receiver.locator(tid("app")).waitFor();
  await convItem(receiver, "51").click();
  await waitFor("52 to get every text", async () => {
    const m = await messages(receiver);
    return [JSON.stringify(m.map((x) => x.text)) === JSON.stringify(Object.values(HOSTILE)), m.map((x) => x.text.slice(0, 30))];
  });
  await checkHostile(receiver);
  await waitFor("51's texts to be marked read", async () => {
    const m = await messages(sender);
    return [m.every((x) => x.state === "read"), m.map((x) => x.state)];
  });
  await shot(sender, "bidi");
  await shot(receiver, "bidi-phone");
  await desktop.close();
  await phone.close();
  delete pages["51-desktop"];
  delete pages["52-phone"];
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("sign in with a token", { timeout: 60000 }, async () => {
  const secret = newSecret();
  const tokenServer = startServer(await freePort(), "-secret", secret);
  try {
    await waitReady(tokenServer);
    const base = `http://127.0.0.1:${tokenServer.port}`;
    const good = await mint(secret, "65", "1h");
    const now = Math.floor(Date.now() / 1000);
    const expired = jwt(secret, { sub: "65", iat: now - 7200, exp: now - 3600 });
    const forged = jwt("not-the-secret", { sub: "65", iat: now, exp: now + 3600 });

    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await newPage(context, "65-token");
    await page.goto(base);
    const error = page.locator(tid("signin-error"));
    const submit = page.locator(tid("signin-submit"));

    await page.locator(tid("signin-user")).fill("65");
    await submit.click();
    await waitFor("a user id to be refused by a server with a secret", async () => [/needs a token/.test(await error.textContent()), await error.textContent()]);

    await page.locator(tid("signin-mode-token")).check();
    const input = page.locator(tid("signin-token"));
    await input.fill("not a token");
    await submit.click();
    assert.match(await error.textContent(), /not a token/);
    await input.fill(forged);
    await submit.click();
    await waitFor("a forged token to be rejected", async () => [/rejected/.test(await error.textContent()), await error.textContent()]);
    await input.fill(expired);
    await submit.click();
    await waitFor("an expired token to be called expired", async () => [/expired/.test(await error.textContent()), await error.textContent()]);
    await shot(page, "signin-token-expired");
    await page.close();
    delete pages["65-token"];

    // A link with a token the server refuses: the page finds out when it connects.
    const refused = await newPage(await browser.newContext(), "65-refused");
    await refused.goto(`${base}/#token=${expired}`);
    await waitFor("the sign-in form to say the linked token expired", async () => {
      const text = await refused.locator(tid("signin-error")).textContent();
      return [(await refused.locator(tid("signin-form")).isVisible()) && /expired/.test(text), text];
    });
    await refused.context().close();
    delete pages["65-refused"];

    const linked = await newPage(context, "65-token");
    await linked.goto(`${base}/#token=${good}`);
    await linked.locator(tid("app")).waitFor();
    await waitFor("the token's user to be signed in", async () => [(await linked.locator(tid("me")).textContent()) === "65"]);
    await linked.reload(); // the choice is remembered
    await linked.locator(tid("app")).waitFor();
    await waitFor("the token's user to stay signed in", async () => [(await linked.locator(tid("me")).textContent()) === "65"]);
    await context.close();
    delete pages["65-token"];
  } finally {
    const code = await stopServer(tokenServer);
    assert.equal(code, 0, "chatd should exit 0 on SIGTERM");
  }
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

/**
 * frameTexts splits a message from the server into the texts of its frames: the page offers batch
 * framing (subprotocol chatd.batch), in which one message may hold several frames separated by "\n".
 */
function frameTexts(msg) {
  return String(msg).split("\n");
}

/** isReady tells whether a message from the server holds its "ready". */
function isReady(payload) {
  return frameTexts(payload).some((text) => {
    try {
      return JSON.parse(text).type === "ready";
    } catch {
      return false;
    }
  });
}

/** expectSessionExpired waits for the sign-in form to say the session expired, then for no reconnect. */
async function expectSessionExpired(page, opened, timeout) {
  await waitFor("the sign-in form to say the session expired", async () => {
    const text = await page.locator(tid("signin-error")).textContent();
    return [(await page.locator(tid("signin-form")).isVisible()) && /session expired/i.test(text), text];
  }, timeout);
  assert.equal(await page.locator(tid("signin-mode-token")).isChecked(), true, "the form asks for a token");
  const before = opened();
  await sleep(2500); // the first reconnect would come within 0.5 s, the second within 1 s more
  assert.equal(opened(), before, "the page does not connect again");
}

test("a socket the server closes because its token expired ends on the sign-in form", { timeout: 60000 }, async () => {
  const secret = newSecret();
  const tokenServer = startServer(await freePort(), "-secret", secret);
  try {
    await waitReady(tokenServer);
    const token = await mint(secret, "67", "1h");
    const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "67-token");
    // Stand between the page and the server to close the socket with a chosen code and reason.
    let opened = 0;
    let ready = 0;
    let route = null;
    await page.routeWebSocket(/\/ws/, (ws) => {
      opened++;
      route = ws;
      const server = ws.connectToServer();
      server.onMessage((msg) => {
        if (isReady(msg)) ready++;
        ws.send(msg);
      });
    });
    await page.goto(`http://127.0.0.1:${tokenServer.port}/#token=${token}`);
    await page.locator(tid("app")).waitFor();
    await waitFor("the socket to be ready", async () => [ready === 1, ready]);

    // Another policy close (a client too slow to read) is worth a reconnect.
    await route.close({ code: 1008, reason: "too slow" });
    await waitFor("the page to connect again after another 1008", async () => [ready === 2, ready]);
    assert.equal(await page.locator(tid("app")).isVisible(), true, "the page stays signed in");

    await route.close({ code: 1008, reason: "token expired" });
    await expectSessionExpired(page, () => opened, 5000);
    await shot(page, "session-expired");
    await page.context().close();
    delete pages["67-token"];
  } finally {
    const code = await stopServer(tokenServer);
    assert.equal(code, 0, "chatd should exit 0 on SIGTERM");
  }
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("a socket whose token expires is closed and the page shows sign-in", { timeout: 60000 }, async () => {
  const secret = newSecret();
  const tokenServer = startServer(await freePort(), "-secret", secret);
  try {
    await waitReady(tokenServer);
    const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "68-token");
    let opened = 0;
    let ready = 0;
    page.on("websocket", (ws) => {
      opened++;
      ws.on("framereceived", (f) => { if (isReady(f.payload)) ready++; });
    });
    const token = await mint(secret, "68", "3s");
    const exp = JSON.parse(Buffer.from(token.split(".")[1], "base64url")).exp * 1000;
    await page.goto(`http://127.0.0.1:${tokenServer.port}/#token=${token}`);
    await page.locator(tid("app")).waitFor();
    await waitFor("the socket to be ready", async () => [ready === 1, ready]);
    // The server closes the socket (1008, "token expired") when the token runs out, with some
    // leeway for clock skew; the page then signs out instead of reconnecting.
    await expectSessionExpired(page, () => opened, Math.max(1000, exp + 10000 - Date.now()));
    await page.context().close();
    delete pages["68-token"];
  } finally {
    const code = await stopServer(tokenServer);
    assert.equal(code, 0, "chatd should exit 0 on SIGTERM");
  }
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

// ---------- read positions: badges and read marks come from the server ----------

/**
 * device connects as `user` over a WebSocket of its own, from a helper page, and sends `frames` one by
 * one, each waiting for its reply: another device of that user, or the other person, without a page.
 * Resolves to the replies.
 */
async function device(helper, user, frames) {
  return helper.evaluate(async ({ user, frames }) => {
    const ws = new WebSocket(`ws://${location.host}/ws?user=${user}`);
    const waiting = new Map();
    await new Promise((resolve, reject) => {
      ws.onerror = () => reject(new Error("device socket failed"));
      ws.onmessage = (e) => {
        const f = JSON.parse(e.data);
        if (f.type === "ready") resolve();
        const w = waiting.get(f.id);
        if (w) {
          waiting.delete(f.id);
          w(f);
        }
      };
    });
    const replies = [];
    for (const [i, frame] of frames.entries()) {
      const id = `device-${user}-${Date.now()}-${i}`;
      const reply = await new Promise((resolve) => {
        waiting.set(id, resolve);
        ws.send(JSON.stringify({ ...frame, id }));
      });
      if (reply.type === "error") throw new Error(`device ${user}: ${JSON.stringify(reply)}`);
      replies.push(reply);
    }
    ws.close(1000);
    return replies;
  }, { user, frames });
}

async function helperPage(base, name) {
  const helper = await newPage(await browser.newContext(), name);
  await helper.goto(`${base}/icon.svg`);
  return helper;
}

async function closePage(page, name) {
  await page.context().close();
  delete pages[name];
}

/** sideBySide saves one screenshot of several pages next to each other, each with a caption. */
async function sideBySide(name, parts) {
  const figures = [];
  for (const { page, label } of parts) {
    const png = (await page.screenshot()).toString("base64");
    figures.push(`<figure><figcaption>${label}</figcaption><img src="data:image/png;base64,${png}"></figure>`);
  }
  const board = await browser.newPage({ viewport: { width: 1300, height: 100 } });
  await board.setContent(`<style>body{margin:0;padding:6px;display:flex;gap:8px;background:#555;font:14px sans-serif}
    figure{margin:0}figcaption{color:#fff;padding:2px 0 4px}img{width:636px;display:block}</style>${figures.join("")}`);
  await board.screenshot({ path: path.join(shots, `${name}.png`), fullPage: true });
  await board.close();
}

async function signedInAs(page) {
  await page.locator(tid("app")).waitFor();
  return (await page.locator(tid("me")).textContent()).trim();
}

/** stays asserts that `read` keeps returning `want` for `ms` (a count must not drift afterwards). */
async function stays(what, read, want, ms = 1200) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    assert.equal(await read(), want, what);
    await sleep(100);
  }
}

test("a badge counts what came while another conversation was open, through a reconnect and a reload", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const helper = await helperPage(base, "302-device");
  const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "301-desktop");
  let route = null;
  let ready = 0;
  await page.routeWebSocket(/\/ws/, (ws) => {
    route = ws;
    const server = ws.connectToServer();
    server.onMessage((msg) => {
      if (isReady(msg)) ready++;
      ws.send(msg);
    });
  });
  await page.goto(`${base}/#user=301`);
  await page.locator(tid("new-chat-input")).fill("303");
  await page.locator(tid("new-chat-input")).press("Enter");
  await waitFor("the conversation with 303 to load", async () => [/No messages yet/.test(await page.locator(tid("history-note")).textContent())]);

  await device(helper, "302", [{ type: "send", to: "301", text: "Are you there, 301?" }]);
  await waitFor("a badge of 1 for 302", async () => [(await unreadOf(page, "302")) === "1", await unreadOf(page, "302")]);
  assert.equal(await page.title(), "(1) chatd");

  // The server's count after the reconnect includes the message that came live: it replaces, not adds.
  await route.close({ code: 1012, reason: "service restart" });
  await waitFor("the page to connect again", async () => [ready === 2, ready]);
  await stays("the badge after the reconnect", () => unreadOf(page, "302"), "1");

  await page.reload();
  await page.locator(tid("app")).waitFor();
  await waitFor("the badge to be there after the reload", async () => [(await unreadOf(page, "302")) === "1", await unreadOf(page, "302")]);
  await stays("the badge after the reload", () => unreadOf(page, "302"), "1");
  assert.equal(await page.title(), "(1) chatd");
  // Looking at another conversation leaves it as it is.
  await page.locator(tid("new-chat-input")).fill("303");
  await page.locator(tid("new-chat-input")).press("Enter");
  await waitFor("the conversation with 303 to load", async () => [/No messages yet/.test(await page.locator(tid("history-note")).textContent())]);
  await stays("the badge with another conversation open", () => unreadOf(page, "302"), "1", 500);
  await shot(page, "badge-after-reload");
  const [inbox] = await device(helper, "301", [{ type: "inbox" }]);
  assert.equal(inbox.conversations.find((c) => c.with === "302")?.unread, 1, "loading the page marked nothing read");

  // Opening it reads it, on the server too.
  await convItem(page, "302").click();
  await waitFor("the badge to clear once the conversation is open", async () => [(await unreadOf(page, "302")) === "", await unreadOf(page, "302")]);
  await waitFor("the server to count it read", async () => {
    const [again] = await device(helper, "301", [{ type: "inbox" }]);
    const c = again.conversations.find((x) => x.with === "302");
    return [c.unread === 0 && c.read === 1, c];
  });
  await closePage(page, "301-desktop");
  await closePage(helper, "302-device");
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("a read in one tab or device clears the badge in the other tabs", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const helper = await helperPage(base, "312-device");
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const tabA = await newPage(context, "311-tab-a");
  await tabA.goto(`${base}/#user=311`);
  assert.equal(await signedInAs(tabA), "311");
  const tabB = await newPage(context, "311-tab-b");
  await tabB.goto(`${base}/#user=311`);
  assert.equal(await signedInAs(tabB), "311");

  await device(helper, "312", [1, 2, 3].map((i) => ({ type: "send", to: "311", text: `Unread ${i}` })));
  for (const tab of [tabA, tabB]) {
    await waitFor("a badge of 3 in both tabs", async () => [(await unreadOf(tab, "312")) === "3", await unreadOf(tab, "312")]);
  }

  // Another device of 311 reads the first two: the badge follows the server's count, 1.
  await device(helper, "311", [{ type: "read", with: "312", seq: 2 }]);
  for (const tab of [tabA, tabB]) {
    await waitFor("the badge to drop to 1 in both tabs", async () => [(await unreadOf(tab, "312")) === "1", await unreadOf(tab, "312")]);
  }

  // Tab B opens the conversation: tab A's badge clears, with no reload.
  await convItem(tabB, "312").click();
  await waitFor("tab B to show the messages", async () => [(await messages(tabB)).length === 3, await messages(tabB)]);
  await waitFor("tab A's badge to clear", async () => [(await unreadOf(tabA, "312")) === "", await unreadOf(tabA, "312")]);
  assert.equal(await unreadOf(tabB, "312"), "");
  assert.equal(await tabA.title(), "chatd");
  await sideBySide("read-other-tab", [
    { page: tabA, label: "Tab A (311): no badge for 312 any more" },
    { page: tabB, label: "Tab B (311): read the conversation with 312" },
  ]);

  // A new message while tab B looks at the conversation: tab A counts it, then B's read clears it.
  await device(helper, "312", [{ type: "send", to: "311", text: "One more" }]);
  await waitFor("tab B to show the new message", async () => [(await messages(tabB)).length === 4, await messages(tabB)]);
  await waitFor("tab A's badge to clear again", async () => [(await unreadOf(tabA, "312")) === "", await unreadOf(tabA, "312")]);
  await tabA.reload();
  await tabA.locator(tid("app")).waitFor();
  await convItem(tabA, "312").waitFor();
  await stays("tab A's badge after a reload", () => unreadOf(tabA, "312"), "");
  await context.close();
  delete pages["311-tab-a"];
  delete pages["311-tab-b"];
  await closePage(helper, "312-device");
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("read marks survive a reload", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const helper = await helperPage(base, "322-device");
  const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "321-desktop");
  await page.goto(`${base}/#user=321`);
  await page.locator(tid("new-chat-input")).fill("322");
  await page.locator(tid("new-chat-input")).press("Enter");
  await waitFor("the empty conversation to load", async () => [/No messages yet/.test(await page.locator(tid("history-note")).textContent())]);
  await sendAndWait(page, "First from 321");
  await sendAndWait(page, "Second from 321");
  const states = async () => (await messages(page)).map((m) => `${m.seq}:${m.from}:${m.state}`);

  await device(helper, "322", [{ type: "read", with: "321" }]);
  await waitFor("both to show as read", async () => [(await states()).join() === "1:321:read,2:321:read", await states()]);
  await sendAndWait(page, "Third from 321");
  // An answer reads what came before it: no receipt needed.
  await device(helper, "322", [{ type: "send", to: "321", text: "Answer from 322" }]);
  await waitFor("the answer to mark the third read", async () => [
    (await states()).join() === "1:321:read,2:321:read,3:321:read,4:322:", await states()]);
  await sendAndWait(page, "Fourth from 321, not read yet");
  const want = "1:321:read,2:321:read,3:321:read,4:322:,5:321:sent";
  assert.equal((await states()).join(), want);

  await page.reload();
  await page.locator(tid("app")).waitFor();
  await convItem(page, "322").click();
  await waitFor("the same marks after the reload", async () => [(await states()).join() === want, await states()]);
  await stays("the marks after the reload", async () => (await states()).join(), want, 600);
  await shot(page, "ticks-after-reload");

  // And live again: 322 reads the fourth.
  await device(helper, "322", [{ type: "read", with: "321" }]);
  await waitFor("the fourth to show as read", async () => [(await states()).join() === want.replace(/sent$/, "read"), await states()]);
  await closePage(page, "321-desktop");
  await closePage(helper, "322-device");
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("two tabs of one browser keep two users", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // The page remembers its user once connected; the last one connected is the one for new tabs.
  const lastConnected = (page) => page.evaluate(() => localStorage.getItem("chatd.user"));
  const tab1 = await newPage(context, "331-tab");
  await tab1.goto(`${base}/#user=331`);
  assert.equal(await signedInAs(tab1), "331");
  await waitFor("tab 1 to be connected", async () => [(await lastConnected(tab1)) === "331"]);
  const tab2 = await newPage(context, "332-tab");
  await tab2.goto(`${base}/#user=332`);
  assert.equal(await signedInAs(tab2), "332");
  await waitFor("tab 2 to be connected", async () => [(await lastConnected(tab2)) === "332"]);

  await tab2.reload();
  assert.equal(await signedInAs(tab2), "332", "tab 2 is still 332 after a reload");
  await tab1.reload();
  assert.equal(await signedInAs(tab1), "331", "tab 1 is still 331 after a reload");

  // They are two people: one writes, the other gets it.
  await tab1.locator(tid("new-chat-input")).fill("332");
  await tab1.locator(tid("new-chat-input")).press("Enter");
  await sendAndWait(tab1, "Hello from the tab next door");
  await waitFor("tab 2 to get it as 332", async () => [(await unreadOf(tab2, "331")) === "1", await unreadOf(tab2, "331")]);
  await sideBySide("two-tabs", [
    { page: tab1, label: "Tab 1 after a reload: 331" },
    { page: tab2, label: "Tab 2 after a reload: 332" },
  ]);

  // A new tab starts as the user of the tab loaded last; signing out there leaves the others signed in.
  const tab3 = await newPage(context, "new-tab");
  await tab3.goto(base);
  assert.equal(await signedInAs(tab3), "331", "a new tab starts as the last user");
  await tab3.locator(tid("signout")).click();
  await tab3.locator(tid("signin-form")).waitFor();
  await tab3.reload();
  await tab3.locator(tid("signin-form")).waitFor();
  assert.equal(await tab3.locator(tid("app")).isVisible(), false, "a signed-out tab stays signed out");
  await tab2.reload();
  assert.equal(await signedInAs(tab2), "332", "the other tabs stay signed in");
  await context.close();
  for (const name of ["331-tab", "332-tab", "new-tab"]) delete pages[name];
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

/** setVisible makes the page believe it is shown or hidden (as when another tab is in front). */
function setVisible(page, visible) {
  return page.evaluate((visible) => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => (visible ? "visible" : "hidden") });
    document.dispatchEvent(new Event("visibilitychange"));
  }, visible);
}

test("catching up a conversation nobody is looking at leaves it unread", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const helper = await helperPage(base, "342-device");
  const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "341-desktop");
  // Stand between the page and the server to lose one message on the way, so that the page must
  // fetch it from history.
  let drop = false;
  await page.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((msg) => {
      let texts = frameTexts(msg);
      const lose = drop ? texts.findIndex((t) => JSON.parse(t).type === "message") : -1;
      if (lose >= 0) {
        drop = false;
        texts = texts.filter((_, i) => i !== lose);
        if (texts.length === 0) return;
      }
      ws.send(texts.join("\n"));
    });
  });
  await page.goto(`${base}/#user=341`);
  await page.locator(tid("app")).waitFor();
  await device(helper, "342", [{ type: "send", to: "341", text: "Before the gap" }]);
  await waitFor("a badge of 1 for 342", async () => [(await unreadOf(page, "342")) === "1", await unreadOf(page, "342")]);
  await convItem(page, "342").click();
  await waitFor("the badge to clear", async () => [(await unreadOf(page, "342")) === "", await unreadOf(page, "342")]);
  const unreadOnServer = async () => {
    const [inbox] = await device(helper, "341", [{ type: "inbox" }]);
    return inbox.conversations.find((c) => c.with === "342")?.unread;
  };
  await waitFor("the server to count it read", async () => [(await unreadOnServer()) === 0]);

  // The tab goes to the background with the conversation still open; one message is lost on the way.
  await setVisible(page, false);
  drop = true;
  await device(helper, "342", [
    { type: "send", to: "341", text: "Lost on the way" },
    { type: "send", to: "341", text: "After the gap" },
  ]);
  await waitFor("the page to fetch the lost message", async () => {
    const m = await messages(page);
    return [m.map((x) => x.text).join() === "Before the gap,Lost on the way,After the gap", m];
  });
  assert.equal(drop, false, "a message was lost on the way");
  await waitFor("a badge of 2 in the background tab", async () => [(await unreadOf(page, "342")) === "2", await unreadOf(page, "342")]);
  await stays("the badge in the background tab", () => unreadOf(page, "342"), "2", 600);
  assert.equal(await unreadOnServer(), 2, "catching up marked nothing read");
  await shot(page, "background-catch-up");

  // Back in front: now they are read, here and on the server.
  await setVisible(page, true);
  await waitFor("the badge to clear when the tab is in front", async () => [(await unreadOf(page, "342")) === "", await unreadOf(page, "342")]);
  await waitFor("the server to count them read", async () => [(await unreadOnServer()) === 0]);
  await closePage(page, "341-desktop");
  await closePage(helper, "342-device");
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});

test("the page offers batch framing and reads frames joined in one message", { timeout: 60000 }, async () => {
  const base = `http://127.0.0.1:${port}`;
  const helper = await helperPage(base, "362-device");
  // The server selects chatd.batch for a browser that offers it.
  const selected = await helper.evaluate(() => new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://${location.host}/ws?user=363`, ["chatd.batch"]);
    ws.onopen = () => {
      resolve(ws.protocol);
      ws.close(1000);
    };
    ws.onerror = () => reject(new Error("socket failed"));
  }));
  assert.equal(selected, "chatd.batch", "the server selects batch framing");

  // Stand between the page and the server to hold frames back, then hand them over joined in one
  // message, as the server does with frames that were queued together.
  const page = await newPage(await browser.newContext({ viewport: { width: 1280, height: 800 } }), "361-desktop");
  let offered = null;
  let route = null;
  let hold = false;
  const held = [];
  await page.routeWebSocket(/\/ws/, (ws) => {
    offered = ws.protocols();
    route = ws;
    const server = ws.connectToServer();
    server.onMessage((msg) => {
      if (hold) held.push(...frameTexts(msg));
      else ws.send(msg);
    });
  });
  await page.goto(`${base}/#user=361`);
  await page.locator(tid("new-chat-input")).fill("362");
  await page.locator(tid("new-chat-input")).press("Enter");
  await waitFor("the conversation with 362 to load", async () => [/No messages yet/.test(await page.locator(tid("history-note")).textContent())]);
  assert.deepEqual(offered, ["chatd.batch"], "the page offers batch framing");

  hold = true;
  await device(helper, "362", [1, 2, 3].map((i) => ({ type: "send", to: "361", text: `Joined ${i}` })));
  const heldMessages = () => held.filter((t) => JSON.parse(t).type === "message").length;
  await waitFor("three messages held back", async () => [heldMessages() === 3, held]);
  hold = false;
  route.send(held.join("\n"));
  await waitFor("the three messages, in order", async () => {
    const m = await messages(page);
    return [m.map((x) => x.text).join() === "Joined 1,Joined 2,Joined 3", m];
  });
  await closePage(page, "361-desktop");
  await closePage(helper, "362-device");
  assert.deepEqual(problems, [], "no uncaught errors or dialogs in the pages");
});
