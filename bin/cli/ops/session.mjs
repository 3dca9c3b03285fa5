// Who the operator commands talk to and as whom: the server URL, stored credentials
// ($XDG_CONFIG_HOME/cloister/config.json, mode 0600, one entry per server), and an HTTP client
// that answers the registry's Bearer challenges with tokens from the token service.
import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { RegistryClient, describeError } from "../../lib/registry-client.mjs";

/** Exit codes (documented in docs/cli.md "Operators"); 0–5 mean what they mean for the image commands. */
export const EXIT = { OK: 0, ERROR: 1, USAGE: 2, AUTH: 3, NOT_FOUND: 4, NETWORK: 5, CONFLICT: 6 };

export class CliError extends Error {
  constructor(message, exitCode = EXIT.ERROR, extra = {}) {
    super(message);
    this.exitCode = exitCode;
    Object.assign(this, extra);
  }
}

export function exitCodeFor(status) {
  if (status === 401 || status === 403) return EXIT.AUTH;
  if (status === 404) return EXIT.NOT_FOUND;
  if (status === 409) return EXIT.CONFLICT;
  return EXIT.ERROR;
}

// ---- config file --------------------------------------------------------------------------------

export function configPath() {
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "cloister", "config.json");
}

export function loadConfig() {
  try {
    const c = JSON.parse(readFileSync(configPath(), "utf8"));
    return { servers: c.servers && typeof c.servers === "object" ? c.servers : {}, current: typeof c.current === "string" ? c.current : null };
  } catch (e) {
    if (e.code === "ENOENT") return { servers: {}, current: null };
    throw new CliError(`cannot read ${configPath()}: ${e.message}`);
  }
}

/** Written to a temp file with mode 0600 and renamed: never readable by others, never half-written. */
export function saveConfig(cfg) {
  const path = configPath();
  const dir = join(path, "..");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(cfg, null, 2) + "\n", { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

// ---- server and credentials ---------------------------------------------------------------------

/** "reg.example", "127.0.0.1:8787" or a URL → origin. Loopback hosts default to http, others to https. */
export function normalizeServer(s) {
  let text = String(s).trim().replace(/\/+$/, "");
  if (!/^https?:\/\//.test(text)) {
    const host = text.split("/")[0];
    const loopback = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$/.test(host);
    text = `${loopback ? "http" : "https"}://${text}`;
  }
  let u;
  try {
    u = new URL(text);
  } catch {
    throw new CliError(`--server ${JSON.stringify(s)} is not a URL or host[:port]`, EXIT.USAGE);
  }
  return u.origin;
}

/** The server from --server / CLOISTER_SERVER, else the one last signed in to. */
export function resolveServer(opts) {
  if (opts.server) return normalizeServer(opts.server);
  const cfg = loadConfig();
  if (cfg.current) return cfg.current;
  throw new CliError("no registry given: pass --server URL, set CLOISTER_SERVER, or run `cloister login --server URL` first", EXIT.USAGE);
}

/** Claims of a JWT, unverified (only to tell an access token from a refresh token). */
function claimsOf(token) {
  try {
    return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
  } catch {
    return null;
  }
}

/**
 * Credentials for `server`: --token, then CLOISTER_TOKEN, then the config file. A token may be a
 * refresh token (what `cloister login` stores) or an access token (used as is).
 */
export function resolveCredentials(server, opts) {
  const given = opts.token ?? process.env.CLOISTER_TOKEN;
  if (given) {
    const c = claimsOf(given);
    return c?.use === "refresh" ? { refreshToken: given, source: opts.token ? "--token" : "CLOISTER_TOKEN" } : { accessToken: given, source: opts.token ? "--token" : "CLOISTER_TOKEN" };
  }
  const entry = loadConfig().servers[server];
  if (entry?.refreshToken) return { refreshToken: entry.refreshToken, user: entry.user, source: "config", stored: true };
  return { source: "none" };
}

// ---- HTTP -------------------------------------------------------------------------------------------

function parseBearer(header) {
  if (!header) return null;
  const m = /(?:^|,\s*)Bearer\s+([^]*?)(?=,\s*Basic\b|$)/i.exec(header);
  if (!m) return null;
  const params = {};
  for (const p of m[1].matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) params[p[1].toLowerCase()] = p[2];
  return params.realm ? params : null;
}

/**
 * JSON calls to the registry and its admin API over RegistryClient's connection handling. Tokens
 * are fetched on challenge and kept per scope for the life of the process.
 */
export class OpsClient {
  constructor(server, creds) {
    const u = new URL(server);
    this.server = server;
    this.http = new RegistryClient({ scheme: u.protocol.replace(":", ""), host: u.host, insecure: process.env.CLOISTER_INSECURE === "1", retries: 2 });
    this.creds = creds;
    this.tokens = new Map();
  }

  close() {
    this.http.close();
  }

  /** One exchange with retries of transient failures and one answer to an auth challenge. */
  async send(method, path, { body, headers = {}, scope = null } = {}) {
    const url = new URL(path, this.server).toString();
    let answered = false;
    for (let attempt = 0; ; attempt++) {
      const h = { "User-Agent": "cloister-cli/1", Accept: "application/json", ...headers };
      const tok = this.creds.accessToken ?? (scope ? this.tokens.get(scope) : undefined);
      if (tok) h.Authorization = `Bearer ${tok}`;
      let res;
      try {
        res = await this.http.raw(method, url, h, body);
      } catch (err) {
        if (attempt < 2 && ["ECONNRESET", "EPIPE", "ETIMEDOUT"].includes(err.code)) continue;
        throw new CliError(`${method} ${url}: ${err.code === "ECONNREFUSED" ? "connection refused (is the registry running, and is --server right?)" : err.message}`, EXIT.NETWORK, { code: err.code });
      }
      if (res.status === 401 && !answered && !this.creds.accessToken) {
        answered = true;
        const ch = parseBearer(res.headers["www-authenticate"]);
        if (ch) {
          const got = await this.fetchToken(ch, ch.scope ?? scope);
          if (got) {
            scope = ch.scope ?? scope;
            continue;
          }
        }
      }
      if ([502, 503, 504].includes(res.status) && attempt < 2) {
        await new Promise((r) => setTimeout(r, 300 * 2 ** attempt));
        continue;
      }
      return res;
    }
  }

  /** An access token for `scope` from the refresh token; false without credentials. */
  async fetchToken(ch, scope) {
    if (!this.creds.refreshToken) return false;
    const form = new URLSearchParams({ grant_type: "refresh_token", refresh_token: this.creds.refreshToken, client_id: "cloister-cli" });
    if (ch.service) form.set("service", ch.service);
    if (scope) form.set("scope", scope);
    const res = await this.http.raw("POST", ch.realm, { "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "cloister-cli/1" }, Buffer.from(form.toString()));
    if (res.status !== 200) {
      throw new CliError(`the token service refused the stored credentials: ${describeError(res)}. Sign in again with \`cloister login\`.`, EXIT.AUTH, { status: res.status });
    }
    const j = JSON.parse(res.body.toString("utf8"));
    this.tokens.set(scope, j.access_token ?? j.token);
    // The service hands out a fresh refresh token each time: keep the stored one fresh (sliding expiry).
    if (j.refresh_token && this.creds.stored) {
      const cfg = loadConfig();
      if (cfg.servers[this.server]?.refreshToken === this.creds.refreshToken) {
        cfg.servers[this.server].refreshToken = j.refresh_token;
        saveConfig(cfg);
        this.creds.refreshToken = j.refresh_token;
      }
    }
    return true;
  }

  /** A JSON call; throws CliError (with the exit code for its status) unless the status is in `ok`. */
  async json(method, path, { body, scope = "registry:admin:*", ok = [200, 201, 202, 204] } = {}) {
    const headers = {};
    let buf;
    if (body !== undefined) {
      buf = Buffer.from(JSON.stringify(body));
      headers["Content-Type"] = "application/json";
    }
    const res = await this.send(method, path, { body: buf, headers, scope });
    if (!ok.includes(res.status)) throw httpError(method, path, res);
    const text = res.body.toString("utf8");
    return { status: res.status, headers: res.headers, data: text ? JSON.parse(text) : null };
  }
}

export function httpError(method, path, res) {
  let code;
  try {
    code = JSON.parse(res.body.toString("utf8")).errors?.[0]?.code;
  } catch {}
  let hint = "";
  if (res.status === 401) hint = " (sign in with `cloister login`, or pass --token / CLOISTER_TOKEN)";
  if (res.status === 403) hint = " (the account lacks the permission; the admin API needs the admin action)";
  return new CliError(`${method} ${path.split("?")[0]}: ${describeError(res)}${hint}`, exitCodeFor(res.status), { status: res.status, code });
}

/** The client for a command: server and credentials from global options, environment and config. */
export function clientFor(opts) {
  const server = resolveServer(opts);
  return new OpsClient(server, resolveCredentials(server, opts));
}
