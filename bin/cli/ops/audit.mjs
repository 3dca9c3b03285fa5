// `cloister audit tail -f`: the admin API's server-sent event stream (GET /admin/audit/stream),
// read incrementally, with reconnects after Last-Event-ID when the server ends a stream.
import http from "node:http";
import https from "node:https";
import { CliError, httpError } from "./session.mjs";

/** One event: a JSON line with --json, else "time action actor target status". */
export function printEvent(ev, json) {
  if (json) {
    process.stdout.write(JSON.stringify(ev) + "\n");
    return;
  }
  const t = ev.target ?? {};
  const target = t.repository ? `${t.repository}${t.tag ? `:${t.tag}` : ""}${t.digest ? `@${t.digest.slice(0, 19)}` : ""}` : "-";
  process.stdout.write(`${ev.time}  ${ev.action.padEnd(16)}  ${String(ev.actor?.principal ?? "-").padEnd(20)}  ${target}  ${ev.outcome?.status ?? ""}\n`);
}

/** Follows the stream until the process is interrupted. */
export async function auditFollow(c, query, json) {
  const scope = "registry:admin:*";
  let lastId = null;
  for (;;) {
    // Any admin call fetches a fresh token for the stream request (access tokens expire sooner than streams).
    c.tokens.delete(scope);
    await c.json("GET", "/admin/whoami");
    const q = new URLSearchParams(query);
    const headers = { Accept: "text/event-stream", "User-Agent": "cloister-cli/1" };
    const tok = c.creds.accessToken ?? c.tokens.get(scope);
    if (tok) headers.Authorization = `Bearer ${tok}`;
    if (lastId) headers["Last-Event-ID"] = lastId;
    const url = new URL(`/admin/audit/stream?${q}`, c.server);
    const status = await new Promise((resolve, reject) => {
      const mod = url.protocol === "https:" ? https : http;
      const req = mod.request(url, { method: "GET", headers, rejectUnauthorized: process.env.CLOISTER_INSECURE !== "1" }, (res) => {
        if (res.statusCode !== 200) {
          const parts = [];
          res.on("data", (d) => parts.push(d));
          res.on("end", () => reject(httpError("GET", "/admin/audit/stream", { status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) })));
          return;
        }
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let event = "message";
            let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
              else if (line.startsWith("id:")) lastId = line.slice(3).trim();
            }
            if (event === "audit" && data) printEvent(JSON.parse(data), json);
          }
        });
        res.on("end", () => resolve(200));
        res.on("error", reject);
      });
      req.on("error", (e) => reject(new CliError(`audit stream: ${e.message}`)));
      req.end();
    });
    if (status !== 200) return;
    // The server ends a stream after 10 minutes; reconnect where it left off.
    await new Promise((r) => setTimeout(r, 500));
  }
}
