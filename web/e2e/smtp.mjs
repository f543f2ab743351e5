// A tiny SMTP server for the e2e run (plain text, no TLS, no auth): enough for lettre to
// deliver to it. Records every accepted message; `accepting = false` makes it refuse the
// next messages permanently (550 at DATA), as a mailbox that does not exist would;
// `tempfail = true` answers 451 at DATA (a transient failure: the server retries).
import { createServer } from "node:net";

/** Decodes RFC 2047 encoded words (`=?utf-8?b?…?=`, `=?utf-8?q?…?=`) in a header value. */
export function decodeHeader(value) {
  return value
    .replace(/\?=\s+=\?/g, "?==?")
    .replace(/=\?([^?]+)\?([bBqQ])\?([^?]*)\?=/g, (_, _charset, enc, text) => {
      if (enc.toLowerCase() === "b") return Buffer.from(text, "base64").toString("utf8");
      const bytes = text.replace(/_/g, " ").replace(/=([0-9A-Fa-f]{2})/g, (_m, h) => String.fromCharCode(parseInt(h, 16)));
      return Buffer.from(bytes, "latin1").toString("utf8");
    });
}

/** Headers of a raw message (unfolded, names lower-cased, values decoded). */
export function parseHeaders(raw) {
  const head = raw.split(/\r?\n\r?\n/, 1)[0] ?? "";
  const headers = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = decodeHeader(line.slice(i + 1).trim());
  }
  return headers;
}

export async function startSmtp() {
  const state = {
    accepting: true,
    tempfail: false,
    messages: [],
    refused: 0,
    port: 0,
    /** Resolves with the first recorded message (after `since`) matching `predicate`. */
    async waitFor(predicate, { timeout = 15_000, since = 0 } = {}) {
      const started = Date.now();
      for (;;) {
        const found = state.messages.slice(since).find(predicate);
        if (found) return found;
        if (Date.now() - started > timeout) throw new Error(`no matching email within ${timeout} ms (got ${state.messages.length}: ${state.messages.map((m) => m.headers.subject).join(" | ")})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  };
  const sockets = new Set();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let buffer = "";
    let envelope = { from: null, to: [] };
    let data = null; // lines of the message while in DATA
    const reply = (line) => socket.write(`${line}\r\n`);
    reply("220 smtp.e2e.test ESMTP ready");
    socket.on("data", (chunk) => {
      buffer += chunk.toString("utf8");
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (data) {
          if (line === ".") {
            const raw = data.join("\r\n");
            state.messages.push({ from: envelope.from, to: envelope.to, raw, headers: parseHeaders(raw), at: Date.now() });
            data = null;
            envelope = { from: null, to: [] };
            reply("250 2.0.0 OK queued");
          } else data.push(line.startsWith("..") ? line.slice(1) : line);
          continue;
        }
        const verb = line.split(" ", 1)[0].toUpperCase();
        if (verb === "EHLO") {
          socket.write("250-smtp.e2e.test\r\n250 8BITMIME\r\n");
        } else if (verb === "HELO") reply("250 smtp.e2e.test");
        else if (verb === "MAIL") {
          envelope = { from: /<([^>]*)>/.exec(line)?.[1] ?? "", to: [] };
          reply("250 2.1.0 OK");
        } else if (verb === "RCPT") {
          envelope.to.push(/<([^>]*)>/.exec(line)?.[1] ?? "");
          reply("250 2.1.5 OK");
        } else if (verb === "DATA") {
          if (state.tempfail) {
            state.refused += 1;
            envelope = { from: null, to: [] };
            reply("451 4.3.0 temporarily unavailable (the e2e SMTP server is failing)");
          } else if (!state.accepting) {
            state.refused += 1;
            envelope = { from: null, to: [] };
            reply("550 5.1.1 mailbox unavailable (the e2e SMTP server is refusing mail)");
          } else {
            data = [];
            reply("354 End data with <CR><LF>.<CR><LF>");
          }
        } else if (verb === "RSET") {
          envelope = { from: null, to: [] };
          reply("250 2.0.0 OK");
        } else if (verb === "NOOP") reply("250 2.0.0 OK");
        else if (verb === "QUIT") {
          reply("221 2.0.0 Bye");
          socket.end();
        } else reply("502 5.5.2 command not implemented");
      }
    });
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  state.port = server.address().port;
  state.url = `smtp://127.0.0.1:${state.port}?tls=none`;
  state.stop = () =>
    new Promise((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return state;
}
