// Page frame and small shared components of the web UI (Hono JSX; text is escaped by JSX).
import type { Child } from "hono/jsx";
import type { Principal } from "../auth/session";
import { CSRF_FIELD } from "./session";

export interface PageInfo {
  title: string;
  /** Nav entry to mark as current. */
  nav?: "dash" | "repos" | "policies" | "users" | "audit" | "gc";
  principal: Principal | null;
  openMode: boolean;
  isAdmin: boolean;
  csrf: string;
  flash?: { kind: "ok" | "error"; text: string } | null;
}

const NAV: { key: PageInfo["nav"]; href: string; label: string; admin: boolean }[] = [
  { key: "dash", href: "/ui", label: "Dashboard", admin: false },
  { key: "repos", href: "/ui/repos", label: "Repositories", admin: false },
  { key: "policies", href: "/ui/policies", label: "Policies", admin: true },
  { key: "users", href: "/ui/users", label: "Users & robots", admin: true },
  { key: "audit", href: "/ui/audit", label: "Audit log", admin: true },
  { key: "gc", href: "/ui/gc", label: "GC", admin: true },
];

export function Csrf({ token }: { token: string }) {
  return <input type="hidden" name={CSRF_FIELD} value={token} />;
}

export function Layout(props: { page: PageInfo; children?: Child }) {
  const p = props.page;
  const who = p.principal && p.principal.kind !== "open" ? p.principal.name : null;
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        {/* htmx must not inject inline styles or evaluate code: the CSP allows neither. */}
        <meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}' />
        <title>{`${p.title} · cloister`}</title>
        <link rel="stylesheet" href="/ui/static/ui.css" />
        <script src="/ui/static/htmx.min.js" defer></script>
        <script src="/ui/static/app.js" defer></script>
      </head>
      <body>
        {p.openMode && (
          <div class="banner" role="alert" id="open-mode-banner">
            Open mode (AUTH_MODE=open): no authentication — anyone can pull, push and delete. For local development only.
          </div>
        )}
        <header class="top">
          <a class="brand" href="/ui">cloister</a>
          <nav aria-label="Main">
            {NAV.filter((n) => !n.admin || p.isAdmin).map((n) => (
              <a href={n.href} aria-current={p.nav === n.key ? "page" : undefined}>
                {n.label}
              </a>
            ))}
          </nav>
          <div class="who">
            {who ? (
              <>
                <span>
                  Signed in as <strong id="whoami">{who}</strong>
                </span>
                <form method="post" action="/ui/logout" class="inline">
                  <Csrf token={p.csrf} />
                  <button type="submit">Sign out</button>
                </form>
              </>
            ) : (
              <a href="/ui/login">Sign in</a>
            )}
          </div>
        </header>
        <main id="main">
          <h1>{p.title}</h1>
          {p.flash && (
            <div class={`flash ${p.flash.kind}`} role={p.flash.kind === "error" ? "alert" : "status"}>
              {p.flash.text}
            </div>
          )}
          {props.children}
        </main>
      </body>
    </html>
  );
}

export function bytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function when(ms: number | string | null | undefined): string {
  if (ms === null || ms === undefined || ms === "") return "—";
  const d = new Date(typeof ms === "number" ? ms : Date.parse(ms));
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function short(digest: string): string {
  return digest.length > 19 ? `${digest.slice(0, 19)}…` : digest;
}

/** A read-only field with a copy button (the button's script is /ui/static/app.js). */
export function CopyField({ id, value, label }: { id: string; value: string; label: string }) {
  return (
    <div class="copy">
      <label for={id} class="sr">
        {label}
      </label>
      <input id={id} type="text" readonly value={value} />
      <button type="button" data-copy={id} aria-label={`Copy ${label}`}>
        Copy
      </button>
    </div>
  );
}

export const repoPath = (name: string) => `/ui/repos/${name}`;
export const manifestPath = (name: string, ref: string) => `/ui/repos/${name}/-/manifests/${ref}`;
