// Admin pages: policies (+ explain), users and robots, audit log (+ live tail), GC. Each needs the
// `admin` action (requireAdminPage) and every change is a call to the /admin API in-process, so
// its validation and audit events apply unchanged.
import type { Hono } from "hono";
import { ADMIN_SCOPE, call, callRaw, type Upstream } from "./api";
import { Csrf, CopyField, bytes, manifestPath, repoPath, short, when } from "./layout";
import { UiError, page, redirectWithFlash, requireAdminPage, type UiCtx, type UiVars } from "./index";

const ACTIONS = ["pull", "push", "delete", "catalog", "admin"];
const AUDIT_PAGE = 50;

const admin = (c: UiCtx, up: Upstream, path: string, o: { method?: string; json?: unknown } = {}) => call(c, up, c.get("ui").principal, path, { ...o, scopes: [ADMIN_SCOPE] });
/** Post/redirect/get: the API's answer is shown once on the page the form came from. */
const back = (c: UiCtx, to: string, r: { ok: boolean; error: string | null }, okText: string) =>
  redirectWithFlash(c, to, r.ok ? { kind: "ok", text: okText } : { kind: "error", text: r.error ?? "failed" });

/** Editable JSON of a stored rule (without the bookkeeping fields the API adds). */
function ruleJson(rule: Record<string, unknown>): string {
  const { createdAt: _a, updatedAt: _b, robot: _c, ...rest } = rule;
  return JSON.stringify(rest, null, 2);
}

function parseJsonField(text: string | undefined): unknown {
  try {
    return JSON.parse(text ?? "");
  } catch {
    throw new UiError(400, "the rule is not valid JSON");
  }
}

export function mountAdmin(ui: Hono<{ Bindings: any; Variables: UiVars }>, up: Upstream) {
  for (const p of ["/policies", "/policies/*", "/users", "/users/*", "/robots", "/robots/*", "/audit", "/audit/*", "/gc", "/gc/*"]) {
    ui.use(p, async (c, next) => {
      requireAdminPage(c);
      await next();
    });
  }

  // ---- policies + explain ---------------------------------------------------------------------
  ui.get("/policies", async (c) => {
    const list = await admin(c, up, "/admin/policies");
    if (!list.ok) throw new UiError(list.status, list.error!);
    const subject = c.req.query("subject") ?? "";
    const action = c.req.query("action") ?? "pull";
    const repository = c.req.query("repository") ?? "";
    const explain = subject ? await explainResult(c, up, subject, action, repository) : null;
    if (c.req.header("HX-Request") === "true" && explain) return c.html(explain);
    const csrf = c.get("ui").csrf;
    const rules = list.data.rules as Record<string, any>[];
    return page(
      c,
      { title: "Policies", nav: "policies" },
      <>
        <section aria-labelledby="explain-h">
          <h2 id="explain-h">Explain a decision</h2>
          <form method="get" action="/ui/policies" class="row" id="explain-form" hx-get="/ui/policies" hx-target="#explain-result" hx-swap="outerHTML">
            <div>
              <label for="subject">Subject</label>
              <input id="subject" name="subject" type="text" value={subject} placeholder="user:alice, robot:alice+ci, anonymous" required />
            </div>
            <div>
              <label for="action">Action</label>
              <select id="action" name="action">
                {ACTIONS.map((a) => (
                  <option value={a} selected={a === action}>
                    {a}
                  </option>
                ))}
              </select>
            </div>
            <div>
              <label for="repository">Repository</label>
              <input id="repository" name="repository" type="text" value={repository} placeholder="alice/app" />
            </div>
            <button type="submit">Explain</button>
          </form>
          {explain ?? <div id="explain-result"></div>}
        </section>
        <section aria-labelledby="rules-h">
          <h2 id="rules-h">Rules</h2>
          <table id="rule-table">
            <thead>
              <tr>
                <th scope="col">Id</th>
                <th scope="col">Kind / effect</th>
                <th scope="col">Subjects</th>
                <th scope="col">Actions / tags</th>
                <th scope="col">Repositories</th>
                <th scope="col">Priority</th>
                <th scope="col"></th>
              </tr>
            </thead>
            <tbody>
              {[...(list.data.builtin as Record<string, any>[]).map((r) => ({ ...r, builtin: true }) as Record<string, any>), ...rules].map((r) => (
                <tr data-rule={r.id}>
                  <td class="mono">{r.id}</td>
                  <td>{ruleKind(r)}</td>
                  <td>{(r.subjects ?? []).join(", ")}</td>
                  <td>{ruleWhat(r)}</td>
                  <td>{(r.repositories ?? ["(all)"]).join(", ")}</td>
                  <td>{r.priority}</td>
                  <td>
                    {r.builtin ? (
                      <span class="muted">built-in</span>
                    ) : (
                      <>
                        <a href={`/ui/policies/edit?id=${encodeURIComponent(r.id)}`} class="button">
                          Edit
                        </a>{" "}
                        <form method="post" action="/ui/policies/delete" class="inline" data-confirm={`Delete rule ${r.id}?`}>
                          <Csrf token={csrf} />
                          <input type="hidden" name="id" value={r.id} />
                          <button type="submit" class="danger" aria-label={`Delete rule ${r.id}`}>
                            Delete
                          </button>
                        </form>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </section>
        <section aria-labelledby="new-h">
          <h2 id="new-h">New rule</h2>
          <form method="post" action="/ui/policies" id="new-rule">
            <Csrf token={csrf} />
            <label for="rule-json">Rule (JSON, see docs/auth.md)</label>
            <textarea id="rule-json" name="rule">
              {JSON.stringify({ id: "team-pull", effect: "allow", subjects: ["user:bob"], actions: ["pull"], repositories: ["team/**"] }, null, 2)}
            </textarea>
            <p>
              <button type="submit" class="primary" id="create-rule">
                Create rule
              </button>
            </p>
          </form>
        </section>
      </>,
    );
  });

  ui.post("/policies", async (c) => {
    const r = await admin(c, up, "/admin/policies", { method: "POST", json: parseJsonField(c.get("ui").form.rule) });
    return back(c, "/ui/policies", r, "Rule created.");
  });

  ui.get("/policies/edit", async (c) => {
    const id = c.req.query("id") ?? "";
    const r = await admin(c, up, `/admin/policies/${encodeURIComponent(id)}`);
    if (!r.ok) throw new UiError(r.status, r.error!);
    if (r.data.builtin) throw new UiError(400, "built-in rules cannot be edited; add a deny rule to narrow them");
    return page(
      c,
      { title: `Edit rule ${id}`, nav: "policies" },
      <form method="post" action="/ui/policies/edit">
        <Csrf token={c.get("ui").csrf} />
        <input type="hidden" name="id" value={id} />
        <label for="rule-json">Rule (JSON)</label>
        <textarea id="rule-json" name="rule">
          {ruleJson(r.data)}
        </textarea>
        <p>
          <button type="submit" class="primary" id="save-rule">
            Save
          </button>{" "}
          <a href="/ui/policies">Cancel</a>
        </p>
      </form>,
    );
  });

  ui.post("/policies/edit", async (c) => {
    const f = c.get("ui").form;
    const id = f.id ?? "";
    const r = await admin(c, up, `/admin/policies/${encodeURIComponent(id)}`, { method: "PUT", json: parseJsonField(f.rule) });
    if (!r.ok) return back(c, `/ui/policies/edit?id=${encodeURIComponent(id)}`, r, "");
    return back(c, "/ui/policies", r, `Rule ${id} saved.`);
  });

  ui.post("/policies/delete", async (c) => {
    const id = c.get("ui").form.id ?? "";
    const r = await admin(c, up, `/admin/policies/${encodeURIComponent(id)}`, { method: "DELETE" });
    return back(c, "/ui/policies", r, `Rule ${id} deleted.`);
  });

  // ---- users and robots -----------------------------------------------------------------------
  ui.get("/users", async (c) => usersPage(c, up, null));

  ui.post("/users", async (c) => {
    const f = c.get("ui").form;
    const r = await admin(c, up, "/admin/users", { method: "POST", json: { name: f.name ?? "", password: f.password ?? "" } });
    return back(c, "/ui/users", r, `User ${f.name} created.`);
  });

  ui.post("/users/password", async (c) => {
    const f = c.get("ui").form;
    const r = await admin(c, up, `/admin/users/${encodeURIComponent(f.name ?? "")}/password`, { method: "PUT", json: { password: f.password ?? "" } });
    return back(c, "/ui/users", r, `Password of ${f.name} reset; their sessions and refresh tokens are revoked.`);
  });

  ui.post("/users/delete", async (c) => {
    const f = c.get("ui").form;
    const r = await admin(c, up, `/admin/users/${encodeURIComponent(f.name ?? "")}`, { method: "DELETE" });
    return back(c, "/ui/users", r, `User ${f.name} deleted.`);
  });

  ui.post("/robots", async (c) => {
    const f = c.get("ui").form;
    const repos = (f.repositories ?? "").split(/[\s,]+/).filter(Boolean);
    const actions = ["pull", "push", "delete"].filter((a) => f[`action_${a}`] === "on");
    const days = Number(f.expiresDays ?? "");
    const body: Record<string, unknown> = { owner: f.owner ?? "", name: f.name ?? "" };
    if (f.description) body.description = f.description;
    if (repos.length && actions.length) body.access = [{ repositories: repos, actions }];
    if (f.expiresDays && Number.isFinite(days) && days > 0) body.expiresInSeconds = Math.round(days * 86400);
    const r = await admin(c, up, "/admin/robots", { method: "POST", json: body });
    if (!r.ok) return back(c, "/ui/users", r, "");
    // The secret is shown once, on this response only (never in a URL, never stored).
    c.header("Cache-Control", "no-store");
    return usersPage(c, up, { account: `robot$${r.data.name}`, secret: r.data.secret });
  });

  ui.post("/robots/delete", async (c) => {
    const account = c.get("ui").form.account ?? "";
    const r = await admin(c, up, `/admin/robots/${encodeURIComponent(account)}`, { method: "DELETE" });
    return back(c, "/ui/users", r, `Robot ${account} revoked.`);
  });

  // ---- audit log ------------------------------------------------------------------------------
  ui.get("/audit", async (c) => {
    const filters = auditFilters(c);
    const q = new URLSearchParams(filters);
    const cursor = c.req.query("cursor");
    const r = await admin(c, up, `/admin/audit?${q}&limit=${AUDIT_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    const events = (r.ok ? r.data.events : []) as any[];
    const field = (id: keyof typeof filters, label: string, placeholder: string) => (
      <div>
        <label for={`f-${id}`}>{label}</label>
        <input id={`f-${id}`} name={id} type="text" value={filters[id] ?? ""} placeholder={placeholder} />
      </div>
    );
    return page(
      c,
      { title: "Audit log", nav: "audit", flash: r.ok ? null : { kind: "error", text: r.error! } },
      <>
        <form method="get" action="/ui/audit" class="row" id="audit-filters">
          {field("actor", "Actor", "user:alice")}
          {field("repository", "Repository", "alice/app")}
          {field("action", "Action", "policy.update")}
          <div>
            <label for="f-outcome">Outcome</label>
            <select id="f-outcome" name="outcome">
              {["", "success", "failure"].map((o) => (
                <option value={o} selected={(filters.outcome ?? "") === o}>
                  {o || "any"}
                </option>
              ))}
            </select>
          </div>
          <button type="submit">Filter</button>
        </form>
        <section aria-labelledby="tail-h">
          <h2 id="tail-h">Live</h2>
          <p id="tail-status" class="muted" aria-live="polite">
            Live tail needs JavaScript; reload the page to see new events.
          </p>
          <table id="tail" data-src={`/ui/audit/stream?${q}`}>
            <tbody></tbody>
          </table>
        </section>
        <section aria-labelledby="log-h">
          <h2 id="log-h">Entries (newest first)</h2>
          <table id="audit-table">
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Details</th>
              </tr>
            </thead>
            <tbody>
              {events.map((e) => (
                <tr data-action={e.action}>
                  <td>{when(e.time)}</td>
                  <td>{e.actor?.principal}</td>
                  <td>{e.action}</td>
                  <td>
                    {e.target?.repository ? <a href={repoPath(e.target.repository)}>{e.target.repository}</a> : ""}
                    {e.target?.tag ? `:${e.target.tag}` : ""}{" "}
                    {e.target?.digest && e.target?.repository ? <a href={manifestPath(e.target.repository, e.target.digest)}>{short(e.target.digest)}</a> : ""}
                  </td>
                  <td>
                    {e.outcome?.status} {e.outcome?.code ?? ""}
                  </td>
                  <td class="mono">{e.details ? JSON.stringify(e.details).slice(0, 300) : ""}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {events.length === 0 && <p class="muted">No entries match.</p>}
          {r.ok && r.data.next && (
            <p class="pager">
              <a href={`/ui/audit?${new URLSearchParams({ ...filters, cursor: r.data.next })}`} rel="next">
                Older entries
              </a>
            </p>
          )}
        </section>
      </>,
    );
  });

  // Server-sent events of the admin API's live tail, passed through as they come.
  ui.get("/audit/stream", async (c) => {
    const q = new URLSearchParams(auditFilters(c));
    const after = c.req.header("Last-Event-ID");
    if (after) q.set("after", after);
    const res = await callRaw(c, up, c.get("ui").principal, `/admin/audit/stream?${q}`, { scopes: [ADMIN_SCOPE] });
    return new Response(res.body, { status: res.status, headers: { "Content-Type": res.headers.get("Content-Type") ?? "text/event-stream", "Cache-Control": "no-store" } });
  });

  // ---- GC ---------------------------------------------------------------------------------------
  ui.get("/gc", async (c) => {
    const r = await admin(c, up, "/admin/gc");
    if (!r.ok) throw new UiError(r.status, r.error!);
    const g = r.data as { state: string; current: any; history: any[] };
    const runs = [...(g.current ? [g.current] : []), ...g.history.filter((h) => h.id !== g.current?.id)];
    return page(
      c,
      { title: "Garbage collection", nav: "gc" },
      <>
        <p id="gc-state">
          State: <strong>{g.state}</strong>
        </p>
        <form method="post" action="/ui/gc" class="row" data-confirm="Start a garbage collection run?">
          <Csrf token={c.get("ui").csrf} />
          <label class="check">
            <input type="checkbox" name="dryRun" checked /> Dry run (report only, delete nothing)
          </label>
          <label class="check">
            <input type="checkbox" name="reconcile" /> Reconcile R2 with the index
          </label>
          <button type="submit" class="primary" id="gc-start">
            Run GC
          </button>
        </form>
        <h2>History</h2>
        <table id="gc-history">
          <thead>
            <tr>
              <th scope="col">Run</th>
              <th scope="col">Trigger</th>
              <th scope="col">Mode</th>
              <th scope="col">State</th>
              <th scope="col">Started</th>
              <th scope="col">Duration</th>
              <th scope="col">Stats</th>
            </tr>
          </thead>
          <tbody>
            {runs.map((h) => (
              <tr>
                <td>#{h.id}</td>
                <td>{h.trigger}</td>
                <td>
                  {h.dryRun ? "dry run" : "real"}
                  {h.reconcile ? " + reconcile" : ""}
                </td>
                <td>{h.state}</td>
                <td>{when(h.startedAt)}</td>
                <td>{h.durationMs !== null ? `${(h.durationMs / 1000).toFixed(1)} s` : "—"}</td>
                <td class="mono">{statsText(h.stats)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        {runs.length === 0 && <p class="muted">No runs yet.</p>}
      </>,
    );
  });

  ui.post("/gc", async (c) => {
    const f = c.get("ui").form;
    const r = await admin(c, up, "/admin/gc", { method: "POST", json: { dryRun: f.dryRun === "on", reconcile: f.reconcile === "on" } });
    return back(c, "/ui/gc", r, `GC run #${r.data?.id ?? "?"} started${f.dryRun === "on" ? " (dry run)" : ""}.`);
  });
}

function statsText(stats: Record<string, unknown> | null | undefined): string {
  if (!stats) return "";
  return Object.entries(stats)
    .filter(([, v]) => typeof v === "number" && v !== 0)
    .map(([k, v]) => (/bytes/i.test(k) ? `${k}=${bytes(v as number)}` : `${k}=${v}`))
    .join(" ");
}

function auditFilters(c: UiCtx): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of ["actor", "repository", "action", "outcome"]) {
    const v = (c.req.query(k) ?? "").trim();
    if (v) out[k] = v.slice(0, 512);
  }
  return out;
}

async function explainResult(c: UiCtx, up: Upstream, subject: string, action: string, repository: string) {
  const q = new URLSearchParams({ subject, action, ...(repository ? { repository } : {}) });
  const r = await admin(c, up, `/admin/explain?${q}`);
  if (!r.ok)
    return (
      <div id="explain-result" class="flash error" role="alert">
        {r.error}
      </div>
    );
  const d = r.data as { allowed: boolean; reason: string; matched: { id: string; effect?: string }[]; signatureGates?: Record<string, any>[]; signatureRepositories?: string[] };
  return (
    <div id="explain-result" aria-live="polite">
      <p>
        <strong class={d.allowed ? "allowed" : "denied"} id="explain-decision">
          {d.allowed ? "ALLOWED" : "DENIED"}
        </strong>{" "}
        — {d.reason}
      </p>
      <p>
        Matched rules:{" "}
        <span id="explain-matched">
          {d.matched.length ? d.matched.map((m) => `${m.id} (${m.effect ?? "rule"})`).join(", ") : "none"}
        </span>
      </p>
      {d.signatureGates?.length ? (
        <p>
          Signature gates: <span id="explain-gates">{d.signatureGates.map((g) => `${g.id}: ${ruleWhat(g)}`).join("; ")}</span>
        </p>
      ) : null}
      {d.signatureRepositories?.length ? (
        <p>
          Signatures also read from: <span id="explain-links">{d.signatureRepositories.join(", ")}</span>
        </p>
      ) : null}
    </div>
  );
}

async function usersPage(c: UiCtx, up: Upstream, created: { account: string; secret: string } | null) {
  const [users, robots] = await Promise.all([admin(c, up, "/admin/users"), admin(c, up, "/admin/robots")]);
  if (!users.ok) throw new UiError(users.status, users.error!);
  const csrf = c.get("ui").csrf;
  const userList = users.data.users as { name: string; createdAt?: number }[];
  return page(
    c,
    { title: "Users and robots", nav: "users" },
    <>
      {created && (
        <section aria-labelledby="secret-h" class="flash ok" id="robot-created">
          <h2 id="secret-h">Robot {created.account} created</h2>
          <p>Its secret is shown once, now. Copy it into your CI secret store; it cannot be shown again.</p>
          <p>
            User name: <code id="robot-account">{created.account}</code>
          </p>
          <CopyField id="robot-secret" value={created.secret} label="robot secret" />
        </section>
      )}
      <section aria-labelledby="users-h">
        <h2 id="users-h">Users</h2>
        <table id="user-table">
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Created</th>
              <th scope="col">Reset password</th>
              <th scope="col">Delete</th>
            </tr>
          </thead>
          <tbody>
            {userList.map((u) => (
              <tr data-user={u.name}>
                <td>{u.name}</td>
                <td>{when(u.createdAt ?? null)}</td>
                <td>
                  <form method="post" action="/ui/users/password" class="inline">
                    <Csrf token={csrf} />
                    <input type="hidden" name="name" value={u.name} />
                    <label for={`pw-${u.name}`} class="sr">
                      New password for {u.name}
                    </label>
                    <input id={`pw-${u.name}`} type="password" name="password" minlength={8} autocomplete="new-password" required />
                    <button type="submit">Reset</button>
                  </form>
                </td>
                <td>
                  <form method="post" action="/ui/users/delete" class="inline" data-confirm={`Delete user ${u.name} and revoke their robots?`}>
                    <Csrf token={csrf} />
                    <input type="hidden" name="name" value={u.name} />
                    <button type="submit" class="danger" aria-label={`Delete user ${u.name}`}>
                      Delete
                    </button>
                  </form>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <form method="post" action="/ui/users" class="row" id="new-user">
          <Csrf token={csrf} />
          <div>
            <label for="nu-name">New user name</label>
            <input id="nu-name" name="name" type="text" required pattern="[a-z0-9]+([._\-][a-z0-9]+)*" />
          </div>
          <div>
            <label for="nu-pw">Password (8+ characters)</label>
            <input id="nu-pw" name="password" type="password" minlength={8} autocomplete="new-password" required />
          </div>
          <button type="submit" class="primary">
            Create user
          </button>
        </form>
      </section>
      <section aria-labelledby="robots-h">
        <h2 id="robots-h">Robots</h2>
        <table id="robot-table">
          <thead>
            <tr>
              <th scope="col">Account</th>
              <th scope="col">Owner</th>
              <th scope="col">Description</th>
              <th scope="col">Expires</th>
              <th scope="col">Revoke</th>
            </tr>
          </thead>
          <tbody>
            {((robots.ok ? robots.data.robots : []) as any[]).map((r) => (
              <tr data-robot={r.name}>
                <td class="mono">robot${r.name}</td>
                <td>{r.owner}</td>
                <td>{r.description ?? ""}</td>
                <td>{r.expiresAt ? when(r.expiresAt * 1000) : "never"}</td>
                <td>
                  <form method="post" action="/ui/robots/delete" class="inline" data-confirm={`Revoke robot$${r.name}?`}>
                    <Csrf token={csrf} />
                    <input type="hidden" name="account" value={`robot$${r.name}`} />
                    <button type="submit" class="danger" aria-label={`Revoke robot$${r.name}`}>
                      Revoke
                    </button>
                  </form>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        <h3>New robot</h3>
        <form method="post" action="/ui/robots" id="new-robot">
          <Csrf token={csrf} />
          <div class="row">
            <div>
              <label for="nr-owner">Owner</label>
              <select id="nr-owner" name="owner">
                <option value="admin">admin</option>
                {userList.map((u) => (
                  <option value={u.name}>{u.name}</option>
                ))}
              </select>
            </div>
            <div>
              <label for="nr-name">Name</label>
              <input id="nr-name" name="name" type="text" required pattern="[a-z0-9]+([._\-][a-z0-9]+)*" />
            </div>
            <div>
              <label for="nr-repos">Repositories (globs, comma-separated)</label>
              <input id="nr-repos" name="repositories" type="text" placeholder="alice/**" />
            </div>
            <div>
              <label for="nr-exp">Expires in days (empty: never)</label>
              <input id="nr-exp" name="expiresDays" type="number" min="1" />
            </div>
          </div>
          <fieldset>
            <legend>Actions on those repositories</legend>
            {["pull", "push", "delete"].map((a) => (
              <label class="check">
                <input type="checkbox" name={`action_${a}`} checked={a === "pull"} /> {a}
              </label>
            ))}
          </fieldset>
          <label for="nr-desc">Description</label>
          <input id="nr-desc" name="description" type="text" />
          <p>
            <button type="submit" class="primary" id="create-robot">
              Create robot
            </button>
          </p>
        </form>
      </section>
    </>,
  );
}

/** The policy table's kind column: every rule kind by name (docs/auth.md, docs/signatures.md). */
function ruleKind(r: Record<string, any>): string {
  if (r.kind === "immutable-tags") return "immutable tags";
  if (r.kind === "signature-repository") return "signature repository";
  if (r.kind === "signature-gate") return "signature gate";
  return String(r.effect ?? "");
}

/** What the rule grants or requires: actions, protected tags, a link's target, a gate's keys. */
function ruleWhat(r: Record<string, any>): string {
  if (r.kind === "signature-repository") return `signatures in ${r.target}`;
  if (r.kind === "signature-gate") return `${r.minimum} of {${(r.keys ?? []).join(", ")}} must sign`;
  return (r.actions ?? r.tags ?? []).join(", ");
}
