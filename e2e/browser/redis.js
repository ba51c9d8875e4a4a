// A tiny Redis client (RESP2 over TCP), enough to delete the keys a test run left behind.

import net from "node:net";

function encode(args) {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const a of args) {
    const b = Buffer.from(String(a));
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from("\r\n"));
  }
  return Buffer.concat(parts);
}

// parse reads one reply at buf[i]; null when the buffer does not hold all of it yet.
function parse(buf, i) {
  const end = buf.indexOf("\r\n", i);
  if (end < 0) return null;
  const line = buf.toString("utf8", i + 1, end);
  switch (String.fromCharCode(buf[i])) {
    case "+": return [line, end + 2];
    case "-": return [new Error(line), end + 2];
    case ":": return [Number(line), end + 2];
    case "$": {
      const n = Number(line);
      if (n < 0) return [null, end + 2];
      if (buf.length < end + 2 + n + 2) return null;
      return [buf.toString("utf8", end + 2, end + 2 + n), end + 4 + n];
    }
    case "*": {
      const n = Number(line);
      if (n < 0) return [null, end + 2];
      const out = [];
      let j = end + 2;
      for (let k = 0; k < n; k++) {
        const r = parse(buf, j);
        if (!r) return null;
        out.push(r[0]);
        j = r[1];
      }
      return [out, j];
    }
    default: throw new Error(`redis: unexpected reply byte ${buf[i]}`);
  }
}

export class Redis {
  /** connect opens redis://[user:password@]host[:port][/db]. */
  static async connect(url) {
    const u = new URL(url);
    if (u.protocol !== "redis:") throw new Error(`redis: only redis:// URLs are supported, not ${u.protocol}`);
    const sock = net.connect({ host: u.hostname || "127.0.0.1", port: Number(u.port) || 6379 });
    await new Promise((resolve, reject) => {
      sock.once("connect", resolve);
      sock.once("error", reject);
    });
    const r = new Redis(sock);
    if (u.password) {
      const args = u.username ? [decodeURIComponent(u.username), decodeURIComponent(u.password)] : [decodeURIComponent(u.password)];
      await r.command("AUTH", ...args);
    }
    const db = u.pathname.replace(/^\//, "");
    if (db) await r.command("SELECT", db);
    return r;
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiting = [];
    sock.on("data", (chunk) => {
      this.buf = Buffer.concat([this.buf, chunk]);
      for (;;) {
        const r = this.buf.length ? parse(this.buf, 0) : null;
        if (!r) break;
        this.buf = this.buf.subarray(r[1]);
        const w = this.waiting.shift();
        if (!w) continue;
        if (r[0] instanceof Error) w.reject(r[0]);
        else w.resolve(r[0]);
      }
    });
    sock.on("error", (err) => {
      for (const w of this.waiting.splice(0)) w.reject(err);
    });
  }

  command(...args) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.sock.write(encode(args));
    });
  }

  /** keys lists every key matching `pattern`, with SCAN. */
  async keys(pattern) {
    const found = [];
    let cursor = "0";
    do {
      const [next, batch] = await this.command("SCAN", cursor, "MATCH", pattern, "COUNT", 1000);
      found.push(...batch);
      cursor = next;
    } while (cursor !== "0");
    return found;
  }

  /** deleteMatching deletes every key matching `pattern` and returns how many there were. */
  async deleteMatching(pattern) {
    const keys = [...new Set(await this.keys(pattern))];
    for (let i = 0; i < keys.length; i += 500) await this.command("DEL", ...keys.slice(i, i + 500));
    return keys.length;
  }

  close() {
    this.sock.end();
  }
}
