#!/usr/bin/env node
// `npm start [-- --port N] [-- --var KEY:VALUE …]`: the registry under `wrangler dev` on
// 127.0.0.1 with local R2 and Durable Objects persisted under .wrangler/state.
// Extra arguments go to wrangler unchanged.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
await import("./extract-wasm.mjs");

const args = process.argv.slice(2);
const has = (flag) => args.some((a) => a === flag || a.startsWith(flag + "="));
const defaults = [];
if (!has("--port")) defaults.push("--port", "8787");
if (!has("--ip")) defaults.push("--ip", "127.0.0.1");
if (!has("--persist-to")) defaults.push("--persist-to", join(root, ".wrangler/state"));
if (!has("--inspector-port")) defaults.push("--inspector-port", "0");

const env = {
  ...process.env,
  WRANGLER_SEND_METRICS: "false",
  WRANGLER_HIDE_BANNER: "true",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
};
const authVar = args.find((a, i) => args[i - 1] === "--var" && a.startsWith("AUTH_MODE:"));
if (!authVar || authVar === "AUTH_MODE:open") {
  console.warn("\n  !!! cloister is running OPEN (AUTH_MODE=open from .dev.vars): anyone who can reach it may push, pull and delete.");
  console.warn("  !!! Use `npm start -- --var AUTH_MODE:token --var ADMIN_PASSWORD:<secret>` to run with auth.\n");
}
const require = createRequire(import.meta.url);
const wrangler = join(dirname(require.resolve("wrangler/package.json")), "bin/wrangler.js");
const child = spawn(process.execPath, [wrangler, "dev", "--local", ...defaults, ...args], { cwd: root, env, stdio: "inherit" });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
