// Operator commands: login, logout, status, repo, tag, user, robot, policy, gc, audit, usage,
// snapshot, restore, completion (docs/cli.md "Operators"). Each command is a thin layer over the
// admin API (src/auth/admin-routes.ts, src/admin/*) or the OCI API; --json prints the API's data.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CliError, EXIT, OpsClient, clientFor, httpError, loadConfig, resolveServer, saveConfig, configPath } from "./ops/session.mjs";
import { bytes, note, printFields, printJson, printTable, promptHidden, promptLine, readStdin, readStdinLine, when } from "./ops/output.mjs";
import { snapshot, restore } from "./ops/snapshot.mjs";
import { completionScript } from "./ops/completion.mjs";
import { auditFollow, printEvent } from "./ops/audit.mjs";

/** @param {import("commander").Command} program */
export function register(program) {
  program.option("--token <token>", "a refresh or access token (or CLOISTER_TOKEN); default: the one `cloister login` stored");
  // Usage errors exit 2 (docs/cli.md); help and version exit 0. Inherited by the commands below.
  program.exitOverride((err) => {
    if (["commander.helpDisplayed", "commander.help", "commander.version"].includes(err.code)) process.exit(0);
    process.exit(EXIT.USAGE);
  });

  /** Wraps an action: a client from the global options, the action's result printed, the client closed. */
  const act = (fn) => async (...args) => {
    const cmd = args[args.length - 1];
    const g = cmd.optsWithGlobals();
    const c = fn.noClient ? null : clientFor(g);
    try {
      await fn({ c, g, json: !!g.json, args: args.slice(0, -2), opts: args[args.length - 2] });
    } catch (err) {
      if (g.json && err instanceof CliError) process.stderr.write(JSON.stringify({ error: { message: err.message, status: err.status ?? null, code: err.code ?? null, exitCode: err.exitCode } }) + "\n");
      throw err;
    } finally {
      c?.close();
    }
  };
  const offline = (fn) => Object.assign(fn, { noClient: true });

  // ---- sign-in ------------------------------------------------------------------------------------

  program
    .command("login")
    .description("exchange a password for a refresh token, stored in $XDG_CONFIG_HOME/cloister/config.json (mode 0600)")
    .option("-u, --user <name>", "account name (user, admin or robot$owner+name)")
    .option("--password-stdin", "read the password from the first line of stdin")
    .action(act(offline(async ({ g, json, opts }) => {
      const server = resolveServer(g);
      const c = new OpsClient(server, {});
      try {
        const probe = await c.send("GET", "/v2/");
        if (probe.status === 200) {
          const out = { server, mode: "open", user: null, admin: true, saved: false };
          if (json) return printJson(out);
          return note(`${server} runs in open mode: every command works without signing in. Nothing was stored.`);
        }
        const ch = /Bearer\s+realm="([^"]+)"(?:,service="([^"]*)")?/i.exec(probe.headers["www-authenticate"] ?? "");
        if (probe.status !== 401 || !ch) throw httpError("GET", "/v2/", probe);
        const user = opts.user ?? (await promptLine("Username"));
        const password = opts.passwordStdin ? await readStdinLine() : await promptHidden(`Password for ${user}`);
        if (!user || !password) throw new CliError("a user name and password are needed", EXIT.USAGE);
        const form = new URLSearchParams({ grant_type: "password", username: user, password, scope: "registry:admin:*", access_type: "offline", client_id: "cloister-cli" });
        if (ch[2]) form.set("service", ch[2]);
        const res = await c.http.raw("POST", ch[1], { "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "cloister-cli/1" }, Buffer.from(form.toString()));
        if (res.status !== 200) throw httpError("POST", new URL(ch[1]).pathname, res);
        const j = JSON.parse(res.body.toString("utf8"));
        if (!j.refresh_token) throw new CliError("the token service issued no refresh token");
        const admin = String(j.scope ?? "").split(" ").includes("registry:admin:*");
        const cfg = loadConfig();
        cfg.servers[server] = { user, refreshToken: j.refresh_token, savedAt: new Date().toISOString() };
        cfg.current = server;
        saveConfig(cfg);
        if (json) return printJson({ server, mode: "token", user, admin, saved: true, config: configPath() });
        note(`Signed in to ${server} as ${user}${admin ? " (admin)" : " (not an admin: the admin commands will be refused)"}. Token stored in ${configPath()}.`);
      } finally {
        c.close();
      }
    })));

  program
    .command("logout")
    .description("forget the stored token for the registry")
    .action(act(offline(async ({ g, json }) => {
      const server = resolveServer(g);
      const cfg = loadConfig();
      const had = !!cfg.servers[server];
      delete cfg.servers[server];
      if (cfg.current === server) cfg.current = null;
      saveConfig(cfg);
      if (json) return printJson({ server, removed: had });
      note(had ? `Signed out of ${server}: its token is no longer stored here.` : `No token was stored for ${server}.`);
    })));

  // ---- status -------------------------------------------------------------------------------------

  program
    .command("status")
    .description("registry reachability, who you are, GC, usage, index migration, signing keys")
    .action(act(async ({ c, json }) => {
      const base = await c.send("GET", "/v2/", { scope: null });
      const who = await c.json("GET", "/admin/whoami");
      const [gc, usage, migration, keys, restoreState] = await Promise.all([
        c.json("GET", "/admin/gc"), c.json("GET", "/admin/usage?n=0"), c.json("GET", "/admin/migrations/index"), c.json("GET", "/admin/keys"), c.json("GET", "/admin/restore"),
      ]);
      const u = usage.data;
      const out = {
        server: c.server,
        api: base.headers["docker-distribution-api-version"] ?? null,
        principal: who.data.principal,
        gc: { state: gc.data.state, current: gc.data.current, last: gc.data.history?.[0] ?? null },
        usage: { physicalBytes: u.physicalBytes, logicalBytes: u.logicalBytes, dedupeRatio: u.dedupeRatio, digests: u.digests, objects: u.objects },
        migration: migration.data,
        keys: keys.data,
        restore: restoreState.data.restore,
      };
      if (json) return printJson(out);
      printFields([
        ["server", out.server],
        ["api", out.api],
        ["signed in as", out.principal ? `${out.principal.id ?? out.principal.name ?? JSON.stringify(out.principal)}` : "-"],
        ["gc", out.gc.state + (out.gc.last ? ` (last run ${out.gc.last.id}: ${out.gc.last.state}, ${when(out.gc.last.finishedAt) ?? "unfinished"})` : "")],
        ["stored", `${bytes(u.physicalBytes)} physical, ${bytes(u.logicalBytes)} logical, ${u.digests} digests`],
        ["index migration", migration.data.state],
        ["signing keys", `${keys.data.keys.length} (${keys.data.source})`],
        ["restore", out.restore ? `${out.restore.state} (${out.restore.id})` : "-"],
      ]);
    }));

  // ---- repositories and tags ----------------------------------------------------------------------

  const repo = program.command("repo").description("repositories");
  repo
    .command("list")
    .description("every repository (the catalog)")
    .action(act(async ({ c, json }) => {
      const names = await pages(c, "/v2/_catalog?n=1000", "registry:catalog:*", (d) => d.repositories);
      if (json) return printJson({ repositories: names });
      printTable(names.map((n) => ({ n })), [["REPOSITORY", (r) => r.n]]);
    }));
  repo
    .command("show <name>")
    .description("usage and tags of a repository")
    .action(act(async ({ c, json, args: [name] }) => {
      const usage = await c.json("GET", `/admin/usage/${name}`);
      const tags = await pages(c, `/v2/${name}/tags/list?n=1000`, `repository:${name}:pull`, (d) => d.tags ?? []);
      const out = { ...usage.data, tagNames: tags };
      if (json) return printJson(out);
      printFields([
        ["repository", name],
        ["logical size", bytes(out.logicalBytes)],
        ["blobs", out.blobs],
        ["manifests", out.manifests],
        ["tags", tags.length ? tags.join(", ") : "-"],
        ["last push", when(out.lastPush)],
      ]);
    }));
  repo
    .command("delete <name>")
    .description("delete every manifest, tag and blob membership of a repository (bytes go at the next GC)")
    .option("--yes", "do it (without --yes nothing is deleted)")
    .action(act(async ({ c, json, args: [name], opts }) => {
      if (!opts.yes) throw new CliError(`repo delete removes every manifest and tag of ${name}: pass --yes to confirm`, EXIT.USAGE);
      const manifests = [];
      const blobs = [];
      let cursor = null;
      do {
        const q = cursor ? `?cursor=${encodeURIComponent(JSON.stringify(cursor))}` : "";
        const p = (await c.json("GET", `/admin/snapshot/repositories/${name}${q}`)).data;
        for (const part of p.parts) if (part.table === "members") for (const m of part.rows) (m.kind === "manifest" ? manifests : blobs).push(m.digest);
        cursor = p.next;
      } while (cursor);
      const scope = `repository:${name}:delete`;
      for (const d of manifests) await c.json("DELETE", `/v2/${name}/manifests/${d}`, { scope, ok: [202, 404] });
      for (const d of blobs) await c.json("DELETE", `/v2/${name}/blobs/${d}`, { scope, ok: [202, 404] });
      const out = { repository: name, manifestsDeleted: manifests.length, blobsUnlinked: blobs.length };
      if (json) return printJson(out);
      note(`Deleted ${manifests.length} manifests (and their tags) and ${blobs.length} blob memberships of ${name}. Unreferenced bytes go at the next GC run, and the repository leaves the catalog then.`);
    }));

  const tag = program.command("tag").description("tags");
  tag
    .command("list <repository>")
    .description("tags of a repository")
    .action(act(async ({ c, json, args: [name] }) => {
      const tags = await pages(c, `/v2/${name}/tags/list?n=1000`, `repository:${name}:pull`, (d) => d.tags ?? []);
      if (json) return printJson({ name, tags });
      printTable(tags.map((t) => ({ t })), [["TAG", (r) => r.t]]);
    }));
  tag
    .command("delete <repository> <tags...>")
    .description("delete tags (the manifests stay, untagged)")
    .action(act(async ({ c, json, args: [name, tags] }) => {
      for (const t of tags) await c.json("DELETE", `/v2/${name}/manifests/${encodeURIComponent(t)}`, { scope: `repository:${name}:delete`, ok: [202] });
      if (json) return printJson({ repository: name, deleted: tags });
      note(`Deleted ${tags.length} tag${tags.length === 1 ? "" : "s"} of ${name}.`);
    }));

  // ---- users and robots ---------------------------------------------------------------------------

  const user = program.command("user").description("user accounts");
  user
    .command("list")
    .action(act(async ({ c, json }) => {
      const d = (await c.json("GET", "/admin/users")).data;
      if (json) return printJson(d);
      printTable(d.users, [["NAME", (u) => u.name], ["CREATED", (u) => when(u.createdAt)], ["UPDATED", (u) => when(u.updatedAt)]]);
    }));
  user
    .command("show <name>")
    .action(act(async ({ c, json, args: [name] }) => {
      const d = (await c.json("GET", `/admin/users/${encodeURIComponent(name)}`)).data;
      if (json) return printJson(d);
      printFields([["name", d.name], ["created", when(d.createdAt)], ["updated", when(d.updatedAt)], ["robots", d.robots.map((r) => r.account)]]);
    }));
  user
    .command("create <name>")
    .description("create a user (password prompted, or --password-stdin)")
    .option("--password-stdin", "read the password from the first line of stdin")
    .action(act(async ({ c, json, args: [name], opts }) => {
      const password = await newPassword(name, opts);
      const d = (await c.json("POST", "/admin/users", { body: { name, password } })).data;
      if (json) return printJson(d);
      note(`Created user ${d.name}.`);
    }));
  user
    .command("passwd <name>")
    .description("set a user's password (refresh tokens issued before stop working)")
    .option("--password-stdin", "read the password from the first line of stdin")
    .action(act(async ({ c, json, args: [name], opts }) => {
      const password = await newPassword(name, opts);
      await c.json("PUT", `/admin/users/${encodeURIComponent(name)}/password`, { body: { password } });
      if (json) return printJson({ name, passwordSet: true });
      note(`Set the password of ${name}.`);
    }));
  user
    .command("delete <name>")
    .description("delete a user and revoke the user's robots")
    .action(act(async ({ c, json, args: [name] }) => {
      const d = (await c.json("DELETE", `/admin/users/${encodeURIComponent(name)}`)).data;
      if (json) return printJson({ name, ...d });
      note(`Deleted user ${name}${d.revokedRobots.length ? `; revoked ${d.revokedRobots.join(", ")}` : ""}.`);
    }));

  const robot = program.command("robot").description("robot accounts (for CI)");
  robot
    .command("list")
    .option("--owner <user>", "only this user's robots")
    .action(act(async ({ c, json, opts }) => {
      const d = (await c.json("GET", `/admin/robots${opts.owner ? `?owner=${encodeURIComponent(opts.owner)}` : ""}`)).data;
      if (json) return printJson(d);
      printTable(d.robots, [["ACCOUNT", (r) => r.account], ["OWNER", (r) => r.owner], ["EXPIRES", (r) => when(r.expiresAt)], ["RULES", (r) => r.rules], ["DESCRIPTION", (r) => r.description]]);
    }));
  robot
    .command("create <owner> <name>")
    .description("create robot$<owner>+<name>; its secret is printed once, alone on stdout")
    .option("--access <glob:actions>", "repositories and actions, e.g. 'team/**:pull,push' (repeatable)", (v, prev) => [...prev, v], [])
    .option("--description <text>")
    .option("--expires-in <duration>", "e.g. 3600, 90d, 12h")
    .action(act(async ({ c, json, args: [owner, name], opts }) => {
      const body = { owner, name };
      if (opts.description) body.description = opts.description;
      if (opts.expiresIn) body.expiresInSeconds = duration(opts.expiresIn);
      if (opts.access.length) body.access = opts.access.map(parseAccess);
      const d = (await c.json("POST", "/admin/robots", { body })).data;
      if (json) return printJson(d);
      note(`Created ${d.account}${d.expiresAt ? `, expiring ${when(d.expiresAt)}` : ""}. Its secret follows on stdout: store it now, it is shown only this once.`);
      process.stdout.write(d.secret + "\n");
    }));
  robot
    .command("delete <account>")
    .description("revoke a robot (robot$owner+name or owner+name) and the rules made with it")
    .action(act(async ({ c, json, args: [account] }) => {
      const d = (await c.json("DELETE", `/admin/robots/${encodeURIComponent(account)}`)).data;
      if (json) return printJson(d);
      note(`Revoked ${d.revoked}.`);
    }));

  // ---- policy -------------------------------------------------------------------------------------

  const policy = program.command("policy").description("access policy rules (docs/auth.md)");
  policy
    .command("list")
    .option("--all", "include the built-in rules")
    .action(act(async ({ c, json, opts }) => {
      const d = (await c.json("GET", "/admin/policies")).data;
      if (json) return printJson(d);
      const rows = [...(opts.all ? d.builtin.map((r) => ({ ...r, builtin: true })) : []), ...d.rules];
      printTable(rows, [
        ["ID", (r) => r.id], ["KIND", (r) => r.kind ?? "access"], ["EFFECT", (r) => r.effect], ["SUBJECTS", (r) => r.subjects],
        ["ACTIONS", (r) => r.actions], ["REPOSITORIES", (r) => r.repositories], ["TAGS", (r) => r.tags],
      ]);
    }));
  policy
    .command("show <id>")
    .action(act(async ({ c, args: [id] }) => printJson((await c.json("GET", `/admin/policies/${encodeURIComponent(id)}`)).data)));
  policy
    .command("create [file]")
    .description("create a rule from a JSON file (or stdin: -, or no file)")
    .action(act(async ({ c, json, args: [file] }) => {
      const rule = parseJsonDoc(!file || file === "-" ? await readStdin() : readText(file), file ?? "stdin");
      const d = (await c.json("POST", "/admin/policies", { body: rule })).data;
      if (json) return printJson(d);
      note(`Created rule ${d.id}.`);
    }));
  policy
    .command("edit <id>")
    .description("replace a rule: from --file, or edit it in $VISUAL/$EDITOR")
    .option("--file <path>", "the new rule as JSON ('-' for stdin)")
    .action(act(async ({ c, json, args: [id], opts }) => {
      let rule;
      if (opts.file) rule = parseJsonDoc(opts.file === "-" ? await readStdin() : readText(opts.file), opts.file);
      else {
        const cur = (await c.json("GET", `/admin/policies/${encodeURIComponent(id)}`)).data;
        if (cur.builtin) throw new CliError(`${id} is built in and cannot be edited; add a deny rule to narrow it`, EXIT.CONFLICT);
        const { createdAt: _c, updatedAt: _u, robot: _r, ...editable } = cur;
        rule = editInEditor(editable, id);
        if (rule === null) {
          if (json) return printJson({ id, changed: false });
          return note("No change.");
        }
      }
      const d = (await c.json("PUT", `/admin/policies/${encodeURIComponent(id)}`, { body: rule })).data;
      if (json) return printJson(d);
      note(`Updated rule ${d.id}.`);
    }));
  policy
    .command("delete <id>")
    .action(act(async ({ c, json, args: [id] }) => {
      await c.json("DELETE", `/admin/policies/${encodeURIComponent(id)}`);
      if (json) return printJson({ id, deleted: true });
      note(`Deleted rule ${id}.`);
    }));
  policy
    .command("explain")
    .description("may SUBJECT do ACTION (on REPOSITORY)? and which rule decides")
    .requiredOption("--subject <subject>", 'anonymous, user:<name> or robot:<owner>+<name>')
    .requiredOption("--action <action>", "pull, push, delete, catalog, admin")
    .option("--repository <name>")
    .action(act(async ({ c, json, opts }) => {
      const q = new URLSearchParams({ subject: opts.subject, action: opts.action });
      if (opts.repository) q.set("repository", opts.repository);
      const d = (await c.json("GET", `/admin/explain?${q}`)).data;
      if (json) return printJson(d);
      printFields([["allowed", d.allowed ? "yes" : "no"], ["reason", d.reason], ["deciding rules", (d.deciding ?? []).map((r) => r.id)], ["matched rules", (d.matched ?? []).map((r) => r.id)]]);
    }));

  // ---- GC and usage -------------------------------------------------------------------------------

  const gc = program.command("gc").description("garbage collection (docs/adr/0011)");
  const startGc = (reconcile) => act(async ({ c, json, opts }) => {
    const r = (await c.json("POST", "/admin/gc", { body: { dryRun: !!opts.dryRun, reconcile } })).data;
    let run = r.run;
    if (opts.wait) {
      const deadline = Date.now() + Number(opts.timeout ?? 600) * 1000;
      while (run.state === "running") {
        if (Date.now() > deadline) throw new CliError(`gc run ${run.id} still running after ${opts.timeout ?? 600} s`);
        await new Promise((res) => setTimeout(res, 500));
        const s = (await c.json("GET", "/admin/gc")).data;
        run = [s.current, ...s.history].find((x) => x && x.id === r.id) ?? run;
      }
    }
    if (json) return printJson(run);
    printRun(run);
    if (run.state === "failed") throw new CliError(`gc run ${run.id} failed`);
  });
  gc.command("run")
    .description("start a GC run")
    .option("--dry-run", "count what would go; delete nothing")
    .option("--wait", "wait for the run to finish and print its counts")
    .option("--timeout <seconds>", "with --wait: give up after this long", "600")
    .action(startGc(false));
  gc.command("reconcile")
    .description("start a GC run that also deletes R2 objects no index row knows")
    .option("--dry-run", "count what would go; delete nothing")
    .option("--wait", "wait for the run to finish and print its counts")
    .option("--timeout <seconds>", "with --wait: give up after this long", "600")
    .action(startGc(true));
  gc.command("status")
    .description("the running GC run and the last ones")
    .action(act(async ({ c, json }) => {
      const d = (await c.json("GET", "/admin/gc")).data;
      if (json) return printJson(d);
      note(`gc is ${d.state}`);
      printTable([...(d.current ? [d.current] : []), ...d.history.slice(0, 10)], [
        ["ID", (r) => r.id], ["STATE", (r) => r.state], ["PHASE", (r) => r.phase], ["DRY-RUN", (r) => (r.dryRun ? "yes" : "no")], ["RECONCILE", (r) => (r.reconcile ? "yes" : "no")],
        ["STARTED", (r) => when(r.startedAt)], ["CONDEMNED", (r) => r.stats?.condemned], ["FREED", (r) => bytes(r.stats?.bytesFreed)],
      ]);
    }));

  program
    .command("usage [repository]")
    .description("stored bytes: registry-wide (physical, logical, dedupe) and per repository")
    .action(act(async ({ c, json, args: [name] }) => {
      if (name) {
        const d = (await c.json("GET", `/admin/usage/${name}`)).data;
        if (json) return printJson(d);
        return printFields([["repository", d.repository], ["logical size", bytes(d.logicalBytes)], ["blobs", d.blobs], ["manifests", d.manifests], ["tags", d.tags], ["last push", when(d.lastPush)]]);
      }
      let first = null;
      const repos = [];
      let path = "/admin/usage?n=100";
      for (let i = 0; path && i < 100_000; i++) {
        const r = await c.json("GET", path);
        first ??= r.data;
        repos.push(...r.data.repositories);
        const link = /<([^>]+)>;\s*rel="next"/.exec(r.headers.link ?? "");
        path = link ? link[1] : null;
      }
      const out = { ...first, repositories: repos };
      if (json) return printJson(out);
      note(`${bytes(out.physicalBytes)} stored, ${bytes(out.logicalBytes)} referenced by repositories${out.dedupeRatio ? ` (dedupe ${out.dedupeRatio.toFixed(2)}x)` : ""}, ${out.digests} digests`);
      printTable(repos, [["REPOSITORY", (r) => r.repository], ["LOGICAL", (r) => bytes(r.logicalBytes)], ["BLOBS", (r) => r.blobs], ["MANIFESTS", (r) => r.manifests], ["TAGS", (r) => r.tags], ["LAST PUSH", (r) => when(r.lastPush)]]);
    }));

  // ---- webhooks -----------------------------------------------------------------------------------

  const webhook = program.command("webhook").description("webhook endpoints and their deliveries (docs/audit.md#webhooks)");
  const list = (v, prev) => [...prev, ...v.split(",").map((x) => x.trim()).filter(Boolean)];
  webhook
    .command("list")
    .action(act(async ({ c, json }) => {
      const d = (await c.json("GET", "/admin/webhooks")).data;
      if (json) return printJson(d);
      printTable(d.webhooks, [["ID", (w) => w.id], ["URL", (w) => w.url], ["EVENTS", (w) => w.events], ["REPOSITORIES", (w) => w.repositories], ["ENABLED", (w) => (w.enabled ? "yes" : "no")], ["PENDING", (w) => w.pending]]);
    }));
  webhook
    .command("create <url>")
    .description("add an endpoint; the secret is read from --secret-stdin or prompted (never shown again)")
    .option("--event <action>", "audit actions to send, e.g. manifest.put (repeatable or comma-separated; default: all)", list, [])
    .option("--repository <glob>", "repositories whose events are sent (repeatable; default: **)", list, [])
    .option("--description <text>")
    .option("--secret-stdin", "read the signing secret from stdin")
    .option("--disabled", "create it disabled")
    .action(act(async ({ c, json, args: [url], opts }) => {
      const secret = opts.secretStdin ? await readStdinLine() : await promptHidden("Signing secret (16–256 characters)");
      const body = { url, secret, events: opts.event.length ? opts.event : ["*"], repositories: opts.repository.length ? opts.repository : ["**"], enabled: !opts.disabled };
      if (opts.description) body.description = opts.description;
      const d = (await c.json("POST", "/admin/webhooks", { body })).data;
      if (json) return printJson(d);
      note(`Created webhook ${d.id} → ${d.url}.`);
    }));
  webhook
    .command("show <id>")
    .action(act(async ({ c, args: [id] }) => printJson((await c.json("GET", `/admin/webhooks/${encodeURIComponent(id)}`)).data)));
  for (const [name, enabled] of [["enable", true], ["disable", false]]) {
    webhook
      .command(`${name} <id>`)
      .action(act(async ({ c, json, args: [id] }) => {
        const d = (await c.json("PATCH", `/admin/webhooks/${encodeURIComponent(id)}`, { body: { enabled } })).data;
        if (json) return printJson(d);
        note(`Webhook ${d.id} is ${d.enabled ? "enabled" : "disabled"}.`);
      }));
  }
  webhook
    .command("delete <id>")
    .action(act(async ({ c, json, args: [id] }) => {
      await c.json("DELETE", `/admin/webhooks/${encodeURIComponent(id)}`);
      if (json) return printJson({ deleted: id });
      note(`Deleted webhook ${id}.`);
    }));
  webhook
    .command("deliveries <id>")
    .description("the endpoint's delivery log, newest first")
    .option("-n, --limit <n>", "how many (1–100)", "20")
    .action(act(async ({ c, json, args: [id], opts }) => {
      const d = (await c.json("GET", `/admin/webhooks/${encodeURIComponent(id)}/deliveries?limit=${encodeURIComponent(opts.limit)}`)).data;
      if (json) return printJson(d);
      printTable(d.deliveries, [["ID", (x) => x.id], ["ACTION", (x) => x.action], ["STATE", (x) => x.state], ["ATTEMPTS", (x) => x.attempts], ["LAST STATUS", (x) => x.lastStatus ?? x.lastError], ["NEXT", (x) => x.nextAttemptAt], ["CREATED", (x) => x.createdAt]]);
    }));
  webhook
    .command("redeliver <id> <delivery>")
    .action(act(async ({ c, json, args: [id, delivery] }) => {
      const d = (await c.json("POST", `/admin/webhooks/${encodeURIComponent(id)}/deliveries/${encodeURIComponent(delivery)}/redeliver`)).data;
      if (json) return printJson(d);
      note(`Delivery ${d.id} queued again (${d.redeliveries} manual redelivery${d.redeliveries === 1 ? "" : "ies"}).`);
    }));

  // ---- audit --------------------------------------------------------------------------------------

  const audit = program.command("audit").description("the audit log (docs/audit.md)");
  const filters = (cmd) => cmd
    .option("--actor <principal>", "e.g. user:alice")
    .option("--repository <name>")
    .option("--action <action>", "e.g. manifest.put")
    .option("--outcome <outcome>", "success or failure")
    .option("--since <time>", "ISO 8601 or epoch ms")
    .option("--until <time>", "ISO 8601 or epoch ms");
  const filterQuery = (opts) => {
    const q = new URLSearchParams();
    for (const k of ["actor", "repository", "action", "outcome", "since", "until"]) if (opts[k]) q.set(k, opts[k]);
    return q;
  };
  filters(audit.command("tail"))
    .description("the latest events, oldest first; -f keeps printing new ones")
    .option("-n, --lines <n>", "how many", "20")
    .option("-f, --follow", "keep printing new events until interrupted")
    .action(act(async ({ c, json, opts }) => {
      const q = filterQuery(opts);
      q.set("limit", String(Math.min(Math.max(Number(opts.lines) || 20, 1), 500)));
      const d = (await c.json("GET", `/admin/audit?${q}`)).data;
      for (const ev of d.events.reverse()) printEvent(ev, json);
      if (opts.follow) await auditFollow(c, filterQuery(opts), json);
    }));
  filters(audit.command("query"))
    .description("events matching filters, newest first (pages through the log)")
    .option("--limit <n>", "at most this many events", "100")
    .action(act(async ({ c, json, opts }) => {
      const want = Math.max(1, Number(opts.limit) || 100);
      const events = [];
      let cursor = null;
      do {
        const q = filterQuery(opts);
        q.set("limit", String(Math.min(500, want - events.length)));
        if (cursor) q.set("cursor", cursor);
        const d = (await c.json("GET", `/admin/audit?${q}`)).data;
        events.push(...d.events);
        cursor = d.next;
      } while (cursor && events.length < want);
      if (json) return printJson({ events });
      for (const ev of events) printEvent(ev, false);
    }));
  audit
    .command("verify")
    .description("recompute the hash chain; exit 1 at the first entry that does not match")
    .action(act(async ({ c, json }) => {
      const d = (await c.json("GET", "/admin/audit/verify")).data;
      if (json) printJson(d);
      if (!d.ok) {
        const m = d.firstMismatch;
        throw new CliError(`audit chain broken at ${m.day}${m.seq !== null ? ` #${m.seq}` : ""}${m.id ? ` (event ${m.id})` : ""}: ${m.reason}`);
      }
      if (!json) note(`Audit chain verified: ${d.verifiedDays.length} day(s), ${d.verifiedDays.reduce((n, x) => n + x.count, 0)} events, ${d.checkpoints} retention checkpoint(s).`);
    }));

  // ---- snapshot, restore, completion ------------------------------------------------------------

  program
    .command("snapshot <file>")
    .description("export the index (repositories, tags, manifests, memberships, policies, users without secrets) to a file; blob bytes stay in R2")
    .option("--force", "overwrite the file if it exists")
    .action(act(async ({ c, json, args: [file], opts }) => snapshot(c, file, { json, force: !!opts.force })));
  program
    .command("restore <file>")
    .description("load a snapshot into an EMPTY registry whose bucket holds the blob bytes")
    .option("--resume", "continue a restore that was interrupted")
    .action(act(async ({ c, json, args: [file], opts }) => restore(c, file, { json, resume: !!opts.resume })));
  program
    .command("completion <shell>")
    .description("print a shell completion script: bash or zsh (see docs/cli.md)")
    .action(act(offline(async ({ args: [shell] }) => {
      if (shell !== "bash" && shell !== "zsh") throw new CliError("completion supports bash and zsh", EXIT.USAGE);
      process.stdout.write(completionScript(program, shell));
    })));
}

// ---- helpers ------------------------------------------------------------------------------------

/** Follow Link rel="next" through a paged OCI list. */
async function pages(c, path, scope, pick) {
  const out = [];
  for (let i = 0; path && i < 100_000; i++) {
    const r = await c.json("GET", path, { scope });
    out.push(...pick(r.data));
    const link = /<([^>]+)>;\s*rel="next"/.exec(r.headers.link ?? "");
    path = link ? link[1] : null;
  }
  return out;
}

async function newPassword(name, opts) {
  if (opts.passwordStdin) return readStdinLine();
  const a = await promptHidden(`New password for ${name}`);
  const b = await promptHidden("Again");
  if (a !== b) throw new CliError("the passwords differ", EXIT.USAGE);
  return a;
}

/** "90d", "12h", "30m", "3600" → seconds. */
function duration(text) {
  const m = /^(\d+)([smhd]?)$/.exec(String(text).trim());
  if (!m) throw new CliError(`--expires-in ${JSON.stringify(text)}: use seconds or a number with s, m, h or d`, EXIT.USAGE);
  return Number(m[1]) * { "": 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2]];
}

/** "team/**:pull,push" → {repositories, actions}; the glob may contain ":" only before the last one. */
function parseAccess(text) {
  const i = text.lastIndexOf(":");
  if (i <= 0) throw new CliError(`--access ${JSON.stringify(text)}: use <repository glob>:<actions>, e.g. 'team/**:pull,push'`, EXIT.USAGE);
  return { repositories: text.slice(0, i), actions: text.slice(i + 1).split(",").filter(Boolean) };
}

function readText(path) {
  try {
    return readFileSync(path, "utf8");
  } catch (e) {
    throw new CliError(`cannot read ${path}: ${e.message}`, e.code === "ENOENT" ? EXIT.NOT_FOUND : EXIT.ERROR);
  }
}

function parseJsonDoc(text, where) {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CliError(`${where} is not valid JSON: ${e.message}`, EXIT.USAGE);
  }
}

/** Opens the rule in $VISUAL/$EDITOR (vi by default); null when it came back unchanged. */
function editInEditor(rule, id) {
  const dir = mkdtempSync(join(tmpdir(), "cloister-policy-"));
  const file = join(dir, `${id.replace(/[^A-Za-z0-9._-]/g, "_")}.json`);
  const before = JSON.stringify(rule, null, 2) + "\n";
  try {
    writeFileSync(file, before, { mode: 0o600 });
    const editor = process.env.VISUAL || process.env.EDITOR || "vi";
    // Through sh, so EDITOR may carry arguments ("code --wait").
    const r = spawnSync("/bin/sh", ["-c", `${editor} "$1"`, "sh", file], { stdio: "inherit" });
    if (r.status !== 0) throw new CliError(`the editor (${editor}) exited with ${r.status ?? r.signal}; nothing was changed`);
    const after = readFileSync(file, "utf8");
    if (after.trim() === before.trim()) return null;
    return parseJsonDoc(after, "the edited rule");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function printRun(run) {
  printFields([
    ["run", run.id], ["state", run.state], ["phase", run.phase], ["dry run", run.dryRun ? "yes" : "no"], ["reconcile", run.reconcile ? "yes" : "no"],
    ["started", when(run.startedAt)], ["finished", when(run.finishedAt)],
    ["repositories scanned", run.stats?.reposScanned], ["memberships dropped", run.stats?.membershipsDropped],
    ["blobs condemned", run.stats?.condemned], ["objects deleted", run.stats?.objectsDeleted], ["bytes freed", bytes(run.stats?.bytesFreed)],
  ]);
}

