// A small OCI Distribution client over node:http/https (no dependencies): keep-alive connection
// pools, optional self-signed TLS, Basic and Bearer-token auth on challenge, redirects, retries
// of transient failures, and OCI error bodies turned into readable messages. Shared by
// `cloister` (bin/cli/*) and `cloister-cache`.
import http from "node:http";
import https from "node:https";

/**
 * Process exit codes of the CLIs (documented in docs/cli.md): 1 anything else, 2 bad usage,
 * 3 authentication or authorization refused, 4 not found, 5 network or TLS failure.
 */
export const EXIT = { ERROR: 1, USAGE: 2, AUTH: 3, NOT_FOUND: 4, NETWORK: 5 };

export class RegistryError extends Error {
  constructor(message, { status, code, exitCode, detail } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.exitCode =
      exitCode ?? (status === 401 || status === 403 ? EXIT.AUTH : status === 404 ? EXIT.NOT_FOUND : EXIT.ERROR);
  }
}

/**
 * Parse `[http(s)://]host[:port]/repo/path[:tag|@digest]`.
 * Returns { scheme (or null when not given), host, repo, tag, digest }.
 */
export function parseReference(ref) {
  let scheme = null;
  let rest = ref;
  const m = /^(https?):\/\//.exec(ref);
  if (m) {
    scheme = m[1];
    rest = ref.slice(m[0].length);
  }
  const slash = rest.indexOf("/");
  if (slash <= 0) throw new RegistryError(`reference ${JSON.stringify(ref)} must look like <registry>/<repository>[:tag|@digest]`);
  const host = rest.slice(0, slash);
  let path = rest.slice(slash + 1);
  let tag = null;
  let digest = null;
  const at = path.indexOf("@");
  if (at >= 0) {
    digest = path.slice(at + 1);
    path = path.slice(0, at);
    if (!/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(digest)) throw new RegistryError(`invalid digest ${JSON.stringify(digest)}`);
  }
  const colon = path.lastIndexOf(":");
  if (colon > path.lastIndexOf("/")) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!/^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/.test(tag)) throw new RegistryError(`invalid tag ${JSON.stringify(tag)}`);
  }
  if (!/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/.test(path))
    throw new RegistryError(`invalid repository name ${JSON.stringify(path)}`);
  if (!tag && !digest) tag = "latest";
  return { scheme, host, repo: path, tag, digest };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const RETRY_STATUS = new Set([408, 429, 500, 502, 503, 504]);
const RETRY_ERRNO = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EAI_AGAIN", "UND_ERR_SOCKET"]);

function parseChallenge(header) {
  if (!header) return null;
  const sp = header.indexOf(" ");
  const scheme = (sp < 0 ? header : header.slice(0, sp)).toLowerCase();
  const params = {};
  const re = /([a-zA-Z_]+)="([^"]*)"/g;
  let m;
  while ((m = re.exec(header))) params[m[1].toLowerCase()] = m[2];
  return { scheme, params };
}

export class RegistryClient {
  /**
   * @param {{scheme: "http"|"https", host: string, insecure?: boolean, user?: string, password?: string,
   *          maxSockets?: number, timeoutMs?: number, retries?: number}} opts
   */
  constructor(opts) {
    this.base = `${opts.scheme}://${opts.host}`;
    this.user = opts.user;
    this.password = opts.password;
    this.timeoutMs = opts.timeoutMs ?? 5 * 60_000;
    this.retries = opts.retries ?? 3;
    const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 8 };
    this.agents = {
      "http:": new http.Agent(agentOpts),
      "https:": new https.Agent({ ...agentOpts, rejectUnauthorized: !opts.insecure }),
    };
    this.authorization = null; // header value once a challenge was answered
    this.userAgent = opts.userAgent ?? "cloister-cache/1";
  }

  /** Destroy every connection; requests still running fail and are not retried. */
  close() {
    this.closed = true;
    for (const a of Object.values(this.agents)) a.destroy();
  }

  /**
   * One raw exchange; resolves { status, headers, body: Buffer }, or with `stream` and a 2xx
   * answer { status, headers, stream } with the body unread. `body` is a Buffer or a body
   * source { length, open(): Readable } (opened once per attempt, so retries resend it).
   */
  raw(method, url, headers, body, { stream = false } = {}) {
    return new Promise((resolve, reject) => {
      const u = new URL(url);
      const mod = u.protocol === "https:" ? https : http;
      const h = { ...headers };
      if (body !== undefined) h["Content-Length"] = String(body.length);
      const req = mod.request(u, { method, headers: h, agent: this.agents[u.protocol] }, (res) => {
        if (stream && res.statusCode >= 200 && res.statusCode < 300) return resolve({ status: res.statusCode, headers: res.headers, stream: res });
        const parts = [];
        res.on("data", (d) => parts.push(d));
        res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(parts) }));
        res.on("error", reject);
      });
      req.setTimeout(this.timeoutMs, () => req.destroy(Object.assign(new Error(`${method} ${u.pathname} timed out`), { code: "ETIMEDOUT" })));
      req.on("error", reject);
      if (body === undefined || body.length === 0) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else {
        const src = body.open();
        src.on("error", (e) => req.destroy(e));
        req.on("error", () => src.destroy());
        src.pipe(req);
      }
    });
  }

  /**
   * Send a request relative to the registry (or absolute), answering auth challenges, following
   * redirects and retrying transient failures. Returns { status, headers, body }.
   */
  async request(method, pathOrUrl, { headers = {}, body, scope, retries = this.retries, stream = false } = {}) {
    let url = new URL(pathOrUrl, this.base).toString();
    let authRetried = false;
    for (let attempt = 0, redirects = 0; ; ) {
      const h = { "User-Agent": this.userAgent, ...headers };
      const sameOrigin = new URL(url).origin === new URL(this.base).origin;
      if (this.authorization && sameOrigin) h.Authorization = this.authorization;
      let res;
      try {
        res = await this.raw(method, url, h, body, { stream });
      } catch (err) {
        if (attempt < retries && RETRY_ERRNO.has(err.code) && !this.closed) {
          await sleep(250 * 2 ** attempt++);
          continue;
        }
        const tlsHint = /certificate|self[- ]signed/i.test(err.message) ? " (a self-signed development registry? add --tls-verify=false, or --insecure for cloister cache)" : "";
        throw new RegistryError(`${method} ${url}: ${err.message}${tlsHint}`, { exitCode: EXIT.NETWORK, code: err.code });
      }
      if (res.status === 401 && !authRetried && sameOrigin) {
        authRetried = true;
        if (await this.authenticate(res.headers["www-authenticate"], scope)) continue;
      }
      if ([301, 302, 303, 307, 308].includes(res.status) && res.headers.location && redirects++ < 5) {
        url = new URL(res.headers.location, url).toString();
        if (res.status === 303) method = "GET";
        continue;
      }
      if (RETRY_STATUS.has(res.status) && attempt < retries) {
        const ra = Number(res.headers["retry-after"]);
        await sleep(Number.isFinite(ra) && ra > 0 ? Math.min(ra, 30) * 1000 : 250 * 2 ** attempt);
        attempt++;
        continue;
      }
      return res;
    }
  }

  async authenticate(challengeHeader, scope) {
    const ch = parseChallenge(challengeHeader);
    const basic = this.user !== undefined ? "Basic " + Buffer.from(`${this.user}:${this.password ?? ""}`).toString("base64") : null;
    if (!ch) return false;
    if (ch.scheme === "basic") {
      if (!basic)
        throw new RegistryError("the registry requires credentials: pass --user/--password, set CLOISTER_USER/CLOISTER_PASSWORD, or `docker login` to it", { status: 401 });
      this.authorization = basic;
      return true;
    }
    if (ch.scheme === "bearer" && ch.params.realm) {
      const u = new URL(ch.params.realm);
      if (ch.params.service) u.searchParams.set("service", ch.params.service);
      // Several scopes (e.g. push here and pull from a mount source) go as repeated parameters.
      const scopes = ch.params.scope ? [ch.params.scope] : Array.isArray(scope) ? scope : scope ? [scope] : [];
      for (const sc of scopes) u.searchParams.append("scope", sc);
      const res = await this.raw("GET", u.toString(), basic ? { Authorization: basic } : {}, undefined);
      if (res.status !== 200)
        throw new RegistryError(`token request to ${u.origin}${u.pathname} failed: ${describeError(res)}`, { status: res.status, exitCode: EXIT.AUTH });
      const j = JSON.parse(res.body.toString("utf8"));
      const token = j.token ?? j.access_token;
      if (!token) throw new RegistryError("token response carried no token");
      this.authorization = `Bearer ${token}`;
      return true;
    }
    return false;
  }
}

/** "<status> <CODE>: <message>" from an OCI error body, or the status line. */
export function describeError(res) {
  let text = "";
  try {
    const j = JSON.parse(res.body.toString("utf8"));
    if (Array.isArray(j.errors) && j.errors.length)
      text = j.errors.map((e) => `${e.code ?? "UNKNOWN"}: ${e.message ?? ""}`.trim()).join("; ");
  } catch {
    text = res.body.toString("utf8").slice(0, 300).trim();
  }
  return `HTTP ${res.status}${text ? ` ${text}` : ""}`;
}

/** Throw a RegistryError unless res.status is one of `ok`. */
export function expectStatus(res, ok, what) {
  if (!ok.includes(res.status)) {
    let code, detail;
    try {
      ({ code, detail } = JSON.parse(res.body.toString("utf8")).errors?.[0] ?? {});
    } catch {}
    throw new RegistryError(`${what}: ${describeError(res)}`, { status: res.status, code, detail });
  }
  return res;
}

const LOOPBACK = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d+)?$/i;

/** 127.0.0.0/8, localhost or [::1], with or without a port. */
export function isLoopback(host) {
  return LOOPBACK.test(host);
}

/** Does `host` answer plain HTTP? True on any HTTP status line within `timeoutMs`. */
export function speaksPlainHttp(host, timeoutMs = 1500) {
  return new Promise((resolve) => {
    const req = http.request(`http://${host}/v2/`, { method: "GET", agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end();
  });
}

export const PLAIN_HTTP_HINT = "this registry speaks plain HTTP: add --plain-http";

/**
 * A client for `host` whose GET /v2/ answered 200 (after authenticating). The scheme: the
 * reference's own (http://, https://) or --plain-http wins; a loopback host is tried on plain
 * HTTP first; everything else gets HTTPS, with certificates verified unless `insecure`
 * (--insecure / --tls-verify=false). When HTTPS has not finished within a
 * second, or fails, and the port answers plain HTTP, this fails at once with PLAIN_HTTP_HINT:
 * workerd never answers a TLS ClientHello on an HTTP port, so the handshake would otherwise hang
 * until the request timeout.
 * @param {{host: string, scheme?: "http"|"https"|null, plainHttp?: boolean, insecure?: boolean,
 *          user?: string, password?: string, maxSockets?: number, userAgent?: string,
 *          scope?: string|string[], timeoutMs?: number}} o
 */
export async function connect(o) {
  let scheme = o.scheme ?? (o.plainHttp ? "http" : null);
  if (!scheme && isLoopback(o.host) && (await speaksPlainHttp(o.host))) scheme = "http";
  scheme ??= "https";
  const client = new RegistryClient({ ...o, scheme, insecure: !!o.insecure });
  const ping = client.request("GET", "/v2/", { scope: o.scope, retries: 1 });
  try {
    if (scheme === "https") {
      let timer;
      const slow = new Promise((resolve) => (timer = setTimeout(() => resolve("slow"), 1000)));
      const first = await Promise.race([ping.then(() => "done", () => "failed"), slow]);
      clearTimeout(timer);
      if (first !== "done" && (await speaksPlainHttp(o.host))) {
        ping.catch(() => {});
        throw new RegistryError(`${o.host}: ${PLAIN_HTTP_HINT}`, { exitCode: EXIT.NETWORK });
      }
    }
    expectStatus(await ping, [200], `GET ${client.base}/v2/`);
    return client;
  } catch (err) {
    client.close();
    throw err;
  }
}
