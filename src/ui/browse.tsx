// Read pages (dashboard, repositories, repository, manifest) and manifest/tag deletion.
// Every read goes through /v2 or /admin in-process (./api.ts) as the signed-in principal, so a
// user sees only what policy lets them pull.
import type { Hono } from "hono";
import { isValidName } from "../oci/grammar";
import { evaluate, matchGlob } from "../auth/policy";
import { rulesFor, subjectOf } from "../auth/session";
import { trustStoreFor } from "../stores";
import { ADMIN_SCOPE, CATALOG_SCOPE, call, callRaw, repoScope, type Upstream } from "./api";
import { CopyField, Csrf, bytes, manifestPath, repoPath, short, when } from "./layout";
import { UiError, page, redirectWithFlash, type UiCtx, type UiVars } from "./index";

/** Repositories per page; names a search scans at most (the catalog has no substring index). */
export const REPOS_PAGE = 50;
export const SEARCH_SCAN_LIMIT = 2000;
/** Tags per repository page (each costs up to four in-process calls). */
export const TAGS_PAGE = 20;
/** Largest config blob read for a summary; referrers shown per manifest; tree depth. */
const MAX_CONFIG_BYTES = 1024 * 1024;
const REFERRERS_SHOWN = 50;
const REFERRER_DEPTH = 2;

const MANIFEST_ACCEPT = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.cloister.build-cache.v1+json",
  "*/*",
].join(", ");

type Manifest = {
  mediaType?: string;
  artifactType?: string;
  config?: { digest: string; size: number; mediaType?: string };
  layers?: { digest: string; size: number; mediaType?: string; annotations?: Record<string, string> }[];
  manifests?: { digest: string; size: number; mediaType?: string; platform?: { os?: string; architecture?: string; variant?: string }; annotations?: Record<string, string> }[];
  subject?: { digest: string };
  annotations?: Record<string, string>;
};
type ImageConfig = {
  os?: string;
  architecture?: string;
  variant?: string;
  created?: string;
  config?: { Entrypoint?: string[] | null; Cmd?: string[] | null; Labels?: Record<string, string> | null };
};

const isIndex = (m: Manifest) => Array.isArray(m.manifests);
const platformOf = (p?: { os?: string; architecture?: string; variant?: string }) => (p ? [p.os, p.architecture, p.variant].filter(Boolean).join("/") : "");

function decode(raw: string, what: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new UiError(400, `invalid ${what} (bad percent-encoding)`);
  }
}

/** A page size from ?n=: 1 to `max`, `max` when absent or not a number. */
function pageSize(raw: string | undefined, max: number): number {
  const n = Number(raw);
  return Number.isInteger(n) && n >= 1 ? Math.min(n, max) : max;
}

function repoName(raw: string): string {
  const name = decode(raw, "repository name");
  if (!isValidName(name)) throw new UiError(400, `invalid repository name ${JSON.stringify(name.slice(0, 100))}`);
  return name;
}

async function fetchManifest(c: UiCtx, up: Upstream, name: string, ref: string) {
  const res = await callRaw(c, up, c.get("ui").principal, `/v2/${name}/manifests/${ref}`, { scopes: [repoScope(name, "pull")], accept: MANIFEST_ACCEPT });
  if (!res.ok) {
    const text = await res.text();
    let msg = `HTTP ${res.status}`;
    try {
      msg = JSON.parse(text).errors[0].message;
    } catch {}
    return { ok: false as const, status: res.status, error: msg };
  }
  const text = await res.text();
  let json: Manifest = {};
  try {
    json = JSON.parse(text);
  } catch {}
  return { ok: true as const, digest: res.headers.get("Docker-Content-Digest") ?? "", mediaType: res.headers.get("Content-Type") ?? json.mediaType ?? "", text, json, size: text.length };
}

async function fetchConfig(c: UiCtx, up: Upstream, name: string, m: Manifest): Promise<ImageConfig | null> {
  if (!m.config || m.config.size > MAX_CONFIG_BYTES || !/json/.test(m.config.mediaType ?? "json")) return null;
  const r = await call<ImageConfig>(c, up, c.get("ui").principal, `/v2/${name}/blobs/${m.config.digest}`, { scopes: [repoScope(name, "pull")] });
  return r.ok && r.data && typeof r.data === "object" ? r.data : null;
}

async function fetchReferrers(c: UiCtx, up: Upstream, name: string, digest: string) {
  const r = await call<{ manifests?: { digest: string; artifactType?: string; mediaType?: string; size: number; annotations?: Record<string, string> }[] }>(
    c,
    up,
    c.get("ui").principal,
    `/v2/${name}/referrers/${digest}`,
    { scopes: [repoScope(name, "pull")] },
  );
  return r.ok ? (r.data?.manifests ?? []).slice(0, REFERRERS_SHOWN) : [];
}

async function mayDelete(c: UiCtx, name: string): Promise<boolean> {
  const p = c.get("ui").principal;
  if (!p) return false;
  if (p.kind === "open") return true;
  return evaluate(await rulesFor(c), subjectOf(p), "delete", name).allowed;
}

function pullHost(c: UiCtx): string {
  return new URL(c.req.url).host;
}

export function mountBrowse(ui: Hono<{ Bindings: any; Variables: UiVars }>, up: Upstream) {
  // ---- dashboard ------------------------------------------------------------------------------
  ui.get("/", async (c) => {
    const s = c.get("ui");
    const p = s.principal;
    if (!s.isAdmin) {
      const cat = await call<{ repositories: string[] }>(c, up, p, `/v2/_catalog?n=${REPOS_PAGE}`, { scopes: [CATALOG_SCOPE] });
      const names = cat.ok ? cat.data.repositories : [];
      return page(
        c,
        { title: "Dashboard", nav: "dash" },
        <section>
          <div class="cards">
            <div class="card">
              <div class="n" id="repo-count">
                {names.length}
                {cat.headers.get("Link") ? "+" : ""}
              </div>
              <div class="l">repositories you may pull</div>
            </div>
          </div>
          <p>
            <a href="/ui/repos">Browse repositories</a>
          </p>
        </section>,
      );
    }
    const [usage, gc, pushes, quotas] = await Promise.all([
      call(c, up, p, `/admin/usage?n=100`, { scopes: [ADMIN_SCOPE] }),
      call(c, up, p, `/admin/gc`, { scopes: [ADMIN_SCOPE] }),
      call(c, up, p, `/admin/audit?action=manifest.put&limit=10`, { scopes: [ADMIN_SCOPE] }),
      call(c, up, p, `/admin/quotas`, { scopes: [ADMIN_SCOPE] }),
    ]);
    const u = usage.ok ? usage.data : null;
    const repos: { repository: string; logicalBytes: number; tags: number; lastPush: number | null }[] = u?.repositories ?? [];
    const warnings: { pattern: string; used: number; limit: number }[] = [];
    for (const q of (quotas.ok ? quotas.data.quotas : []) as { pattern: string; limitBytes: number; usedBytes?: number }[]) {
      // The rule's own counter (the whole namespace, src/gc/quotas.ts); the page's sum if absent.
      const used = q.usedBytes ?? repos.filter((r) => matchGlob(q.pattern, r.repository)).reduce((a, r) => a + r.logicalBytes, 0);
      if (q.limitBytes === 0 || used >= q.limitBytes * 0.8) warnings.push({ pattern: q.pattern, used, limit: q.limitBytes });
    }
    const g = gc.ok ? gc.data : null;
    const lastRun = g?.current ?? g?.history?.[0] ?? null;
    return page(
      c,
      { title: "Dashboard", nav: "dash" },
      <>
        <section aria-labelledby="storage-h">
          <h2 id="storage-h">Storage</h2>
          <div class="cards">
            <div class="card">
              <div class="n" id="physical">{bytes(u?.physicalBytes)}</div>
              <div class="l">physical (stored once in R2)</div>
            </div>
            <div class="card">
              <div class="n" id="logical">{bytes(u?.logicalBytes)}</div>
              <div class="l">logical (summed over repositories)</div>
            </div>
            <div class="card">
              <div class="n" id="dedupe">{u?.dedupeRatio ? `${u.dedupeRatio.toFixed(2)}×` : "—"}</div>
              <div class="l">dedupe ratio</div>
            </div>
            <div class="card">
              <div class="n" id="repo-count">
                {repos.length}
                {usage.headers.get("Link") ? "+" : ""}
              </div>
              <div class="l">repositories</div>
            </div>
          </div>
        </section>
        <section aria-labelledby="quota-h">
          <h2 id="quota-h">Quota warnings</h2>
          {warnings.length === 0 ? (
            <p class="muted">No quota rule is at 80 % or more.</p>
          ) : (
            <ul id="quota-warnings">
              {warnings.map((w) => (
                <li>
                  <code>{w.pattern}</code>: {bytes(w.used)} of {bytes(w.limit)}
                </li>
              ))}
            </ul>
          )}
        </section>
        <section aria-labelledby="push-h">
          <h2 id="push-h">Recent pushes</h2>
          {pushes.ok && pushes.data.events.length ? (
            <table id="recent-pushes">
              <thead>
                <tr>
                  <th scope="col">Time</th>
                  <th scope="col">By</th>
                  <th scope="col">Repository</th>
                  <th scope="col">Tag</th>
                  <th scope="col">Digest</th>
                </tr>
              </thead>
              <tbody>
                {(pushes.data.events as any[]).map((e) => (
                  <tr>
                    <td>{when(e.time)}</td>
                    <td>{e.actor?.principal}</td>
                    <td>{e.target?.repository ? <a href={repoPath(e.target.repository)}>{e.target.repository}</a> : "—"}</td>
                    <td>{e.target?.tag ?? "—"}</td>
                    <td class="mono">{e.target?.digest && e.target?.repository ? <a href={manifestPath(e.target.repository, e.target.digest)}>{short(e.target.digest)}</a> : "—"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          ) : (
            <p class="muted">{pushes.ok ? "No pushes recorded yet." : `Audit log unavailable: ${pushes.error}`}</p>
          )}
        </section>
        <section aria-labelledby="gc-h">
          <h2 id="gc-h">Garbage collection</h2>
          <p id="gc-state">
            State: <strong>{g?.state ?? "unknown"}</strong>
            {lastRun && (
              <>
                {" "}
                · last run #{lastRun.id} {lastRun.dryRun ? "(dry run)" : ""} {lastRun.state}, started {when(lastRun.startedAt)}
              </>
            )}{" "}
            · <a href="/ui/gc">GC page</a>
          </p>
        </section>
      </>,
    );
  });

  // ---- repositories ---------------------------------------------------------------------------
  ui.get("/repos", async (c) => {
    const p = c.get("ui").principal;
    const q = (c.req.query("q") ?? "").trim().slice(0, 255);
    const size = pageSize(c.req.query("n"), REPOS_PAGE);
    let last = c.req.query("last") ?? "";
    if (last && !isValidName(last)) last = "";
    const names: string[] = [];
    let next: string | null = null;
    let scanned = 0;
    let error: string | null = null;
    // The catalog is filtered by pull permission; a search walks it and keeps matching names.
    for (;;) {
      const r = await call<{ repositories: string[] }>(c, up, p, `/v2/_catalog?n=100${last ? `&last=${encodeURIComponent(last)}` : ""}`, { scopes: [CATALOG_SCOPE] });
      if (!r.ok) {
        error = r.error;
        break;
      }
      const batch = r.data.repositories ?? [];
      scanned += batch.length;
      for (const n of batch) {
        if (names.length >= size) break;
        if (!q || n.includes(q)) names.push(n);
        last = n;
      }
      const more = !!r.headers.get("Link") || batch.length === 100;
      if (names.length >= size) {
        next = more || batch[batch.length - 1] !== last ? last : null;
        break;
      }
      if (!more || batch.length === 0) break;
      if (scanned >= SEARCH_SCAN_LIMIT) {
        next = last;
        break;
      }
    }
    const usage = await Promise.all(names.map((n) => trustStoreFor(c.env, n).usage(n).catch(() => null)));
    const qs = (extra: Record<string, string>) => new URLSearchParams({ ...(q ? { q } : {}), ...(size !== REPOS_PAGE ? { n: String(size) } : {}), ...extra }).toString();
    const table = (
      <div id="repo-results">
        {error && <p class="flash error">{error}</p>}
        <table id="repo-table">
          <thead>
            <tr>
              <th scope="col">Repository</th>
              <th scope="col">Size</th>
              <th scope="col">Tags</th>
              <th scope="col">Last push</th>
            </tr>
          </thead>
          <tbody>
            {names.map((n, i) => (
              <tr>
                <td>
                  <a href={repoPath(n)}>{n}</a>
                </td>
                <td>{bytes(usage[i]?.logicalBytes)}</td>
                <td>{usage[i]?.tags ?? "—"}</td>
                <td>{when(usage[i]?.lastPush)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {names.length === 0 && !error && <p class="muted">{q ? `No repository you may pull matches "${q}".` : "No repositories you may pull."}</p>}
        {next && (
          <p class="pager">
            <a href={`/ui/repos?${qs({ last: next })}`} rel="next">
              Next page
            </a>
            {scanned >= SEARCH_SCAN_LIMIT && <span class="muted">(searched {scanned} names; continue for more)</span>}
          </p>
        )}
      </div>
    );
    // htmx search-as-you-type swaps just the results; without JS the form submits normally.
    if (c.req.header("HX-Request") === "true") return c.html(table);
    return page(
      c,
      { title: "Repositories", nav: "repos" },
      <>
        <form method="get" action="/ui/repos" role="search" class="row">
          <div>
            <label for="q">Search repositories</label>
            <input id="q" name="q" type="search" value={q} hx-get="/ui/repos" hx-trigger="input changed delay:300ms, search" hx-target="#repo-results" hx-swap="outerHTML" />
          </div>
          <button type="submit">Search</button>
        </form>
        {table}
      </>,
    );
  });

  // ---- delete (confirmation page, then the POST) -----------------------------------------------
  ui.get("/repos/*", async (c, next) => {
    const path = new URL(c.req.url).pathname.slice("/ui/repos/".length);
    const sep = path.indexOf("/-/");
    if (sep < 0) return repositoryPage(c, up, repoName(path));
    const name = repoName(path.slice(0, sep));
    const rest = path.slice(sep + 3);
    if (rest.startsWith("manifests/")) return manifestPage(c, up, name, decode(rest.slice("manifests/".length), "reference"));
    if (rest === "delete") {
      const ref = c.req.query("ref") ?? "";
      if (!ref || ref.length > 200) throw new UiError(400, "name the tag or digest to delete");
      return page(
        c,
        { title: `Delete ${name}:${ref}?`, nav: "repos" },
        <form method="post" action={`/ui/repos/${name}/-/delete`}>
          <Csrf token={c.get("ui").csrf} />
          <input type="hidden" name="ref" value={ref} />
          <p>
            {ref.includes(":") ? `The manifest ${ref} and every tag pointing at it will be deleted from ${name}.` : `The tag ${ref} will be removed from ${name}; the manifest stays reachable by digest.`}
          </p>
          <button type="submit" class="danger" id="confirm-delete">
            Delete
          </button>{" "}
          <a href={repoPath(name)}>Cancel</a>
        </form>,
      );
    }
    return next();
  });

  ui.post("/repos/*", async (c, next) => {
    const path = new URL(c.req.url).pathname.slice("/ui/repos/".length);
    if (!path.endsWith("/-/delete")) return next();
    const name = repoName(path.slice(0, -"/-/delete".length));
    const ref = c.get("ui").form.ref ?? "";
    const r = await call(c, up, c.get("ui").principal, `/v2/${name}/manifests/${encodeURIComponent(ref)}`, { method: "DELETE", scopes: [repoScope(name, "delete")] });
    if (!r.ok) throw new UiError(r.status === 401 ? 403 : r.status, `delete refused: ${r.error}`);
    return redirectWithFlash(c, repoPath(name), { kind: "ok", text: `Deleted ${ref}.` });
  });
}

// ---- repository -------------------------------------------------------------------------------
async function repositoryPage(c: UiCtx, up: Upstream, name: string) {
  const p = c.get("ui").principal;
  const last = c.req.query("last") ?? "";
  const size = pageSize(c.req.query("n"), TAGS_PAGE);
  const tags = await call<{ tags: string[] | null }>(c, up, p, `/v2/${name}/tags/list?n=${size}${last ? `&last=${encodeURIComponent(last)}` : ""}`, { scopes: [repoScope(name, "pull")] });
  if (!tags.ok) throw new UiError(tags.status === 401 ? 404 : tags.status, tags.status === 401 || tags.status === 404 ? `repository ${name} does not exist or you may not pull it` : tags.error!);
  const list = tags.data.tags ?? [];
  // Usage and push times come from the repository's index object directly: the tags/list call
  // above already showed that the viewer may pull this repository (docs/adr/0018-web-ui.md).
  const store = trustStoreFor(c.env, name);
  const [usage, pushed, canDelete] = await Promise.all([store.usage(name).catch(() => null), store.tagTimes(name, list).catch(() => ({}) as Record<string, number>), mayDelete(c, name)]);
  const rows = await Promise.all(
    list.map(async (tag) => {
      const m = await fetchManifest(c, up, name, tag);
      if (!m.ok) return { tag, error: m.error };
      const [cfg, refs] = await Promise.all([isIndex(m.json) ? null : fetchConfig(c, up, name, m.json), fetchReferrers(c, up, name, m.digest)]);
      const size = isIndex(m.json) ? (m.json.manifests ?? []).reduce((a, x) => a + (x.size ?? 0), m.size) : (m.json.layers ?? []).reduce((a, l) => a + (l.size ?? 0), (m.json.config?.size ?? 0) + m.size);
      const platforms = isIndex(m.json) ? (m.json.manifests ?? []).map((x) => platformOf(x.platform)).filter(Boolean) : cfg ? [platformOf(cfg)] : [];
      return { tag, digest: m.digest, size, platforms, created: cfg?.created ?? null, referrers: refs.length };
    }),
  );
  const host = pullHost(c);
  return page(
    c,
    { title: name, nav: "repos" },
    <>
      <p class="muted">
        {usage ? `${bytes(usage.logicalBytes)} · ${usage.tags} tag(s) · ${usage.manifests} manifest(s) · last push ${when(usage.lastPush)}` : ""}
      </p>
      <table id="tag-table">
        <thead>
          <tr>
            <th scope="col">Tag</th>
            <th scope="col">Digest</th>
            <th scope="col">Size</th>
            <th scope="col">Platforms</th>
            <th scope="col">Pushed</th>
            <th scope="col">Created</th>
            <th scope="col">Referrers</th>
            <th scope="col">Pull</th>
            {canDelete && <th scope="col">Delete</th>}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) =>
            "error" in r ? (
              <tr>
                <td>{r.tag}</td>
                <td colspan={8}>{r.error}</td>
              </tr>
            ) : (
              <tr data-tag={r.tag}>
                <td>
                  <a href={manifestPath(name, r.tag)}>{r.tag}</a>
                </td>
                <td class="mono">
                  <a href={manifestPath(name, r.digest)}>{short(r.digest)}</a>
                </td>
                <td>{bytes(r.size)}</td>
                <td>{r.platforms.join(", ") || "—"}</td>
                <td class="pushed">{when(pushed[r.tag] ?? null)}</td>
                <td>{when(r.created)}</td>
                <td>{r.referrers ? <span class="tag referrers">{r.referrers} referrer(s)</span> : "—"}</td>
                <td>
                  <CopyField id={`pull-${i}`} value={`docker pull ${host}/${name}:${r.tag}`} label={`pull command for ${r.tag}`} />
                </td>
                {canDelete && (
                  <td>
                    <form method="get" action={`/ui/repos/${name}/-/delete`} class="inline">
                      <input type="hidden" name="ref" value={r.tag} />
                      <button type="submit" class="danger">
                        Delete…
                      </button>
                    </form>
                  </td>
                )}
              </tr>
            ),
          )}
        </tbody>
      </table>
      {list.length === 0 && <p class="muted">No tags.</p>}
      {tags.headers.get("Link") && list.length > 0 && (
        <p class="pager">
          <a href={`${repoPath(name)}?${new URLSearchParams({ ...(size !== TAGS_PAGE ? { n: String(size) } : {}), last: list[list.length - 1] })}`} rel="next">
            Next tags
          </a>
        </p>
      )}
    </>,
  );
}

// ---- manifest ---------------------------------------------------------------------------------
type RefNode = { digest: string; artifactType: string; size: number; annotations: Record<string, string>; children: RefNode[] };

async function referrerTree(c: UiCtx, up: Upstream, name: string, digest: string, depth: number): Promise<RefNode[]> {
  if (depth <= 0) return [];
  const list = await fetchReferrers(c, up, name, digest);
  return Promise.all(
    list.map(async (r) => ({
      digest: r.digest,
      artifactType: r.artifactType ?? r.mediaType ?? "",
      size: r.size,
      annotations: r.annotations ?? {},
      children: await referrerTree(c, up, name, r.digest, depth - 1),
    })),
  );
}

function RefTree({ name, nodes }: { name: string; nodes: RefNode[] }): any {
  return (
    <ul class="tree">
      {nodes.map((n) => (
        <li>
          <a href={manifestPath(name, n.digest)} class="mono">
            {short(n.digest)}
          </a>{" "}
          <span class="tag">{n.artifactType || "manifest"}</span> {bytes(n.size)}
          {Object.keys(n.annotations).length > 0 && <span class="muted"> {Object.entries(n.annotations).slice(0, 4).map(([k, v]) => `${k}=${v}`).join(", ")}</span>}
          {n.children.length > 0 && <RefTree name={name} nodes={n.children} />}
        </li>
      ))}
    </ul>
  );
}

function KeyValues({ id, data }: { id: string; data: Record<string, string> | null | undefined }) {
  const entries = Object.entries(data ?? {});
  if (!entries.length) return <p class="muted">None.</p>;
  return (
    <table id={id}>
      <tbody>
        {entries.map(([k, v]) => (
          <tr>
            <th scope="row" class="mono">
              {k}
            </th>
            <td class="mono">{v}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

async function manifestPage(c: UiCtx, up: Upstream, name: string, ref: string) {
  if (!ref || ref.length > 200) throw new UiError(400, "invalid reference");
  const m = await fetchManifest(c, up, name, ref);
  if (!m.ok) throw new UiError(m.status === 401 ? 404 : m.status, m.status === 401 ? `${name}:${ref} does not exist or you may not pull it` : m.error);
  const [cfg, tree] = await Promise.all([isIndex(m.json) ? null : fetchConfig(c, up, name, m.json), referrerTree(c, up, name, m.digest, REFERRER_DEPTH)]);
  let pretty = m.text;
  try {
    pretty = JSON.stringify(JSON.parse(m.text), null, 2);
  } catch {}
  const ep = cfg?.config?.Entrypoint ?? null;
  const cmd = cfg?.config?.Cmd ?? null;
  return page(
    c,
    { title: `${name}@${short(m.digest)}`, nav: "repos" },
    <>
      <p>
        <a href={repoPath(name)}>← {name}</a>
      </p>
      <table id="manifest-summary">
        <tbody>
          <tr>
            <th scope="row">Digest</th>
            <td class="mono" id="manifest-digest">
              {m.digest}
            </td>
          </tr>
          <tr>
            <th scope="row">Media type</th>
            <td class="mono">{m.mediaType}</td>
          </tr>
          {m.json.artifactType && (
            <tr>
              <th scope="row">Artifact type</th>
              <td class="mono">{m.json.artifactType}</td>
            </tr>
          )}
          {m.json.subject && (
            <tr>
              <th scope="row">Subject</th>
              <td class="mono">
                <a href={manifestPath(name, m.json.subject.digest)}>{m.json.subject.digest}</a>
              </td>
            </tr>
          )}
          <tr>
            <th scope="row">Pull</th>
            <td>
              <CopyField id="pull-digest" value={`docker pull ${pullHost(c)}/${name}@${m.digest}`} label="pull command" />
            </td>
          </tr>
        </tbody>
      </table>
      {cfg && (
        <section aria-labelledby="cfg-h">
          <h2 id="cfg-h">Configuration</h2>
          <table id="config-summary">
            <tbody>
              <tr>
                <th scope="row">Platform</th>
                <td id="platform">{platformOf(cfg) || "—"}</td>
              </tr>
              <tr>
                <th scope="row">Created</th>
                <td>{when(cfg.created ?? null)}</td>
              </tr>
              <tr>
                <th scope="row">Entrypoint</th>
                <td class="mono">{ep ? JSON.stringify(ep) : "—"}</td>
              </tr>
              <tr>
                <th scope="row">Cmd</th>
                <td class="mono">{cmd ? JSON.stringify(cmd) : "—"}</td>
              </tr>
            </tbody>
          </table>
          <h3>Labels</h3>
          <KeyValues id="labels" data={cfg.config?.Labels} />
        </section>
      )}
      {isIndex(m.json) ? (
        <section aria-labelledby="plat-h">
          <h2 id="plat-h">Platforms</h2>
          <table id="platform-table">
            <thead>
              <tr>
                <th scope="col">Platform</th>
                <th scope="col">Manifest</th>
                <th scope="col">Size</th>
              </tr>
            </thead>
            <tbody>
              {(m.json.manifests ?? []).map((x) => (
                <tr>
                  <td>{platformOf(x.platform) || x.annotations?.["vnd.docker.reference.type"] || "—"}</td>
                  <td class="mono">
                    <a href={manifestPath(name, x.digest)}>{x.digest}</a>
                  </td>
                  <td>{bytes(x.size)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      ) : (
        <section aria-labelledby="layers-h">
          <h2 id="layers-h">Layers</h2>
          <table id="layer-table">
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Digest</th>
                <th scope="col">Media type</th>
                <th scope="col">Size</th>
              </tr>
            </thead>
            <tbody>
              {(m.json.layers ?? []).map((l, i) => (
                <tr>
                  <td>{i + 1}</td>
                  <td class="mono">{l.digest}</td>
                  <td class="mono">{l.mediaType ?? ""}</td>
                  <td>{bytes(l.size)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
      )}
      <section aria-labelledby="ann-h">
        <h2 id="ann-h">Annotations</h2>
        <KeyValues id="annotations" data={m.json.annotations} />
      </section>
      <section aria-labelledby="ref-h">
        <h2 id="ref-h">Referrers</h2>
        <div id="referrers">{tree.length ? <RefTree name={name} nodes={tree} /> : <p class="muted">No signatures, SBOMs or other referrers.</p>}</div>
      </section>
      <section aria-labelledby="raw-h">
        <h2 id="raw-h">Raw JSON</h2>
        <pre id="raw-json" tabindex={0}>
          {pretty}
        </pre>
      </section>
    </>,
  );
}
