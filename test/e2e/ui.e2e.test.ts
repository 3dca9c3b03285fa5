// The web UI in real Chromium (issue 14): sign in, find an image pushed with skopeo, open its
// manifest and see its layers, platforms and a referrer; create a robot in the UI and pull with
// its secret through skopeo; edit a policy and watch explain change; find that change in the audit
// log (and see the live tail update); run GC; a forged cross-site POST is refused and changes
// nothing; a non-admin is refused on admin pages. Every page is saved under test-artifacts/ui/.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, Page } from "puppeteer-core";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients } from "./helpers/exec";
import { request, sha256 } from "./helpers/http";
import { buildLayout, type Layout } from "./helpers/images";
import { CHROMIUM, clickAndWait, launchChromium, newPage, screenshot, setValue, text, valueOf, waitForText } from "./helpers/browser";

const ADMIN_PW = "ui-e2e-admin-password";
const BOB_PW = "bob-ui-e2e-password";
const REPO = "team/app";
const OCI = "application/vnd.oci.image.manifest.v1+json";
const SIG = "application/vnd.dev.cosign.simplesigning.v1+json";
const basic = (u: string, p: string) => `Basic ${Buffer.from(`${u}:${p}`).toString("base64")}`;
const asAdmin = { Authorization: basic("admin", ADMIN_PW) };

const clients = needClients("ui.e2e", ["skopeo", "umoci", CHROMIUM]);
let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let layout: Layout;
let browser: Browser;
let page: Page;
let problems: string[];
let signature: string;

async function pushBlob(repo: string, data: string) {
  const digest = `sha256:${sha256(data)}`;
  const r = await request(reg, "POST", `/v2/${repo}/blobs/uploads/?digest=${digest}`, { headers: { ...asAdmin, "Content-Type": "application/octet-stream" }, body: data });
  expect(r.status, r.text()).toBe(201);
  return { digest, size: Buffer.byteLength(data) };
}

/** A signature-like artifact whose subject is the image, pushed over plain HTTP as oras does. */
async function attachSignature(subject: { digest: string; size: number }) {
  const empty = await pushBlob(REPO, "{}");
  const payload = await pushBlob(REPO, '{"critical":{"identity":"ui-e2e"}}');
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI,
    artifactType: SIG,
    config: { mediaType: "application/vnd.oci.empty.v1+json", digest: empty.digest, size: empty.size },
    layers: [{ mediaType: "application/octet-stream", digest: payload.digest, size: payload.size }],
    subject: { mediaType: OCI, digest: subject.digest, size: subject.size },
    annotations: { "dev.cloister.signer": "ui-e2e" },
  });
  const digest = `sha256:${sha256(manifest)}`;
  const r = await request(reg, "PUT", `/v2/${REPO}/manifests/${digest}`, { headers: { ...asAdmin, "Content-Type": OCI }, body: manifest });
  expect(r.status, r.text()).toBe(201);
  return digest;
}

const go = async (path: string) => (await page.goto(reg.url + path, { waitUntil: "load" }))!;

async function signIn(p: Page, user: string, password: string) {
  await p.goto(`${reg.url}/ui`, { waitUntil: "load" });
  expect(new URL(p.url()).pathname).toBe("/ui/login");
  if (user === "admin") await screenshot(p, "00-sign-in");
  await p.type("#username", user);
  await p.type("#password", password);
  await clickAndWait(p, "#login-form button[type=submit]");
}

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-ui-"));
  [reg, layout, browser] = await Promise.all([
    startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW } }),
    buildLayout(join(work, "layout"), work),
    launchChromium(),
  ]);
  skopeo = new Skopeo(reg);
  const creds = ["--dest-creds", `admin:${ADMIN_PW}`];
  await skopeo.run("copy", [...creds, "--preserve-digests", `oci:${layout.dir}:amd64`, skopeo.ref(`${REPO}:v1`)]);
  await skopeo.run("copy", [...creds, "--all", "--preserve-digests", `oci:${layout.dir}:multi`, skopeo.ref(`${REPO}:multi`)]);
  await skopeo.run("copy", [...creds, "--preserve-digests", `oci:${layout.dir}:arm64`, skopeo.ref("misc/tools:1")]);
  const img = layout.images.amd64;
  signature = await attachSignature({ digest: img.manifestDigest, size: img.manifestBytes.length });
  ({ page, problems } = await newPage(browser));
});

afterAll(async () => {
  await browser?.close();
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

describe.skipIf(clients.skip)("web UI in Chromium", () => {
  test("sign in, then the dashboard shows storage, repositories and recent pushes", async () => {
    await signIn(page, "admin", ADMIN_PW);
    expect(new URL(page.url()).pathname).toBe("/ui");
    expect(await text(page, "#whoami")).toBe("admin");
    expect(await text(page, "#physical")).toMatch(/\d/);
    expect(await text(page, "#repo-count")).toBe("2");
    expect(await text(page, "#recent-pushes")).toContain(REPO);
    await screenshot(page, "01-dashboard");
  });

  test("search finds the image pushed with skopeo; its repository lists tags, platforms and referrers", async () => {
    await go("/ui/repos");
    expect(await text(page, "#repo-table")).toContain("misc/tools");
    await page.type("#q", "team");
    // htmx swaps the results in place (no navigation): misc/tools disappears.
    await waitForText(page, "#repo-table", "misc/tools", { absent: true });
    expect(await text(page, "#repo-table")).toContain(REPO);
    await screenshot(page, "02-repositories");
    await clickAndWait(page, `#repo-table a[href="/ui/repos/${REPO}"]`);
    const v1 = await text(page, 'tr[data-tag="v1"]');
    expect(v1).toContain("linux/amd64");
    expect(v1).toContain("1 referrer(s)");
    const pushed = Date.parse((await text(page, 'tr[data-tag="v1"] .pushed')).replace(" ", "T"));
    expect(Math.abs(Date.now() - pushed)).toBeLessThan(10 * 60_000);
    expect(await text(page, 'tr[data-tag="multi"]')).toContain("linux/arm64");
    const pull = await valueOf(page, 'tr[data-tag="v1"] input[readonly]');
    expect(pull).toBe(`docker pull ${reg.host}/${REPO}:v1`);
    await screenshot(page, "03-repository");
  });

  test("the manifest page shows config, layers, the referrer and raw JSON; an index links its platforms", async () => {
    await clickAndWait(page, 'tr[data-tag="v1"] td:first-child a');
    const img = layout.images.amd64;
    expect(await text(page, "#manifest-digest")).toBe(img.manifestDigest);
    expect(await text(page, "#platform")).toBe("linux/amd64");
    expect(await text(page, "#layer-table")).toContain(img.manifest.layers[0].digest);
    expect(await page.$(`#referrers a[href$="${signature}"]`)).not.toBeNull();
    expect(await text(page, "#referrers")).toContain(SIG);
    expect(await text(page, "#raw-json")).toContain(img.manifest.layers[0].digest);
    await screenshot(page, "04-manifest");
    // The referrer's own page names its subject.
    await clickAndWait(page, `#referrers a[href$="${signature}"]`);
    expect(await text(page, "#manifest-summary")).toContain(img.manifestDigest);
    await go(`/ui/repos/${REPO}/-/manifests/multi`);
    expect(await text(page, "#platform-table")).toContain("linux/arm64");
    await clickAndWait(page, `#platform-table a[href$="${layout.images.arm64.manifestDigest}"]`);
    expect(await text(page, "#platform")).toBe("linux/arm64");
    await screenshot(page, "05-index-child");
  });

  test("a robot created in the UI shows its secret once, and skopeo pulls with it", async () => {
    await go("/ui/users");
    await page.type("#nu-name", "bob");
    await page.type("#nu-pw", BOB_PW);
    await clickAndWait(page, "#new-user button[type=submit]");
    expect(await text(page, ".flash.ok")).toContain("User bob created");
    await page.select("#nr-owner", "admin");
    await page.type("#nr-name", "ci");
    await page.type("#nr-repos", "team/**");
    await clickAndWait(page, "#create-robot");
    const account = await text(page, "#robot-account");
    const secret = await valueOf(page, "#robot-secret");
    expect(account).toBe("robot$admin+ci");
    expect(secret).toMatch(/^cloister_/);
    // The Copy button (script from /ui/static/app.js, no inline code) puts the secret on the clipboard.
    await browser.defaultBrowserContext().overridePermissions(reg.url, ["clipboard-read", "clipboard-write", "clipboard-sanitized-write"]);
    await page.click('button[data-copy="robot-secret"]');
    await waitForText(page, 'button[data-copy="robot-secret"]', "Copied");
    expect(await page.evaluate(() => (globalThis as unknown as { navigator: { clipboard: { readText(): Promise<string> } } }).navigator.clipboard.readText())).toBe(secret);
    await screenshot(page, "06-users-robot-created");
    const inspect = await skopeo.run("inspect", ["--creds", `${account}:${secret}`, "--raw", skopeo.ref(`${REPO}:v1`)]);
    expect(inspect.stdout).toContain(layout.images.amd64.manifest.layers[0].digest);
    const refused = await skopeo.run("inspect", ["--creds", `${account}:${secret}`, "--raw", skopeo.ref("misc/tools:1")], { allowFail: true });
    expect(refused.code).not.toBe(0);
    // Shown once: the users page lists the robot but never its secret.
    await go("/ui/users");
    expect(await page.content()).not.toContain(secret);
    expect(await text(page, "#robot-table")).toContain("robot$admin+ci");
  });

  test("editing a policy changes the explain decision (htmx, in place)", async () => {
    const explain = async () => {
      await go("/ui/policies");
      await page.type("#subject", "user:bob");
      await page.select("#action", "pull");
      await page.type("#repository", REPO);
      await page.click("#explain-form button[type=submit]");
      await page.waitForSelector("#explain-decision", { timeout: 10_000 });
      return text(page, "#explain-result");
    };
    expect(await explain()).toContain("DENIED");
    await setValue(page, "#rule-json", JSON.stringify({ id: "bob-team", effect: "allow", subjects: ["user:bob"], actions: ["pull"], repositories: ["team/**"] }));
    await clickAndWait(page, "#create-rule");
    expect(await text(page, ".flash.ok")).toContain("Rule created");
    const allowed = await explain();
    expect(allowed).toContain("ALLOWED");
    expect(allowed).toContain("bob-team");
    await screenshot(page, "07-policies-explain");
    await go("/ui/policies/edit?id=bob-team");
    await setValue(page, "#rule-json", JSON.stringify({ id: "bob-team", effect: "allow", subjects: ["user:bob"], actions: ["push"], repositories: ["team/**"] }));
    await clickAndWait(page, "#save-rule");
    expect(await text(page, ".flash.ok")).toContain("bob-team saved");
    expect(await explain()).toContain("DENIED");
  });

  test("the audit log shows the policy change and tails new events live", async () => {
    await go("/ui/audit?action=policy.update");
    const row = await text(page, 'tr[data-action="policy.update"]');
    expect(row).toContain("user:admin");
    expect(row).toContain("bob-team");
    await go("/ui/audit");
    await waitForText(page, "#tail-status", "live: waiting");
    const r = await request(reg, "POST", "/admin/users", { headers: { ...asAdmin, "Content-Type": "application/json" }, body: JSON.stringify({ name: "tailed", password: "tailed-password" }) });
    expect(r.status).toBe(201);
    await waitForText(page, "#tail tbody", "user.create", { timeout: 15_000 });
    await screenshot(page, "08-audit");
  });

  test("GC runs a dry run from the UI and lists it in the history", async () => {
    await go("/ui/gc");
    await clickAndWait(page, "#gc-start"); // confirm() is accepted by the page helper
    expect(await text(page, ".flash.ok")).toMatch(/GC run #\d+ started \(dry run\)/);
    expect(await text(page, "#gc-history")).toContain("dry run");
    await screenshot(page, "09-gc");
  });

  test("a forged cross-site POST is refused with 403 and changes nothing", async () => {
    await go("/ui/users");
    const csrf = await valueOf(page, 'input[name="_csrf"]');
    const cookie = (await browser.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
    const post = (fields: Record<string, string>, origin: string) =>
      request(reg, "POST", "/ui/users", { headers: { Cookie: cookie, Origin: origin, "Content-Type": "application/x-www-form-urlencoded" }, body: new URLSearchParams(fields).toString() });
    const user = { name: "mallory", password: "mallory-password" };
    expect((await post(user, reg.url)).status).toBe(403); // no token
    expect((await post({ ...user, _csrf: `${csrf}x` }, reg.url)).status).toBe(403); // wrong token
    expect((await post({ ...user, _csrf: csrf }, "https://evil.example")).status).toBe(403); // foreign Origin
    expect((await request(reg, "GET", "/admin/users/mallory", { headers: asAdmin })).status).toBe(404);
    // The same request, same-site with the right token, works: the refusals were the checks.
    expect((await post({ ...user, _csrf: csrf }, reg.url)).status).toBe(303);
    expect((await request(reg, "GET", "/admin/users/mallory", { headers: asAdmin })).status).toBe(200);
  });

  test("read-only pages work without JavaScript, and delete asks on its own confirmation page", async () => {
    const { page: plain } = await newPage(browser); // same session cookies, scripts off
    await plain.setJavaScriptEnabled(false);
    await plain.goto(`${reg.url}/ui/repos/${REPO}/-/manifests/v1`, { waitUntil: "load" });
    expect(await text(plain, "#layer-table")).toContain(layout.images.amd64.manifest.layers[0].digest);
    await plain.goto(`${reg.url}/ui/repos?q=misc`, { waitUntil: "load" });
    expect(await text(plain, "#repo-table")).toContain("misc/tools");
    expect(await text(plain, "#repo-table")).not.toContain(REPO);
    await plain.goto(`${reg.url}/ui/repos/misc/tools`, { waitUntil: "load" });
    await clickAndWait(plain, 'tr[data-tag="1"] form button');
    expect(new URL(plain.url()).pathname).toBe("/ui/repos/misc/tools/-/delete");
    await screenshot(plain, "11-delete-confirm");
    await clickAndWait(plain, "#confirm-delete");
    expect(await text(plain, ".flash.ok")).toContain("Deleted 1.");
    expect((await request(reg, "GET", "/v2/misc/tools/manifests/1", { headers: asAdmin })).status).toBe(404);
    await plain.close();
  });

  test("a non-admin signs in with the keyboard, sees only what policy lets them pull and is refused on admin pages", async () => {
    const ctx = await browser.createBrowserContext();
    const { page: bob, problems: bobProblems } = await newPage(ctx);
    await bob.goto(`${reg.url}/ui`, { waitUntil: "load" });
    // Keyboard only: the user name field has focus, Tab moves to the password, Enter submits.
    await bob.keyboard.type("bob");
    await bob.keyboard.press("Tab");
    await bob.keyboard.type(BOB_PW);
    await Promise.all([bob.waitForNavigation({ waitUntil: "load" }), bob.keyboard.press("Enter")]);
    expect(await text(bob, "#whoami")).toBe("bob");
    expect(await bob.$('nav a[href="/ui/users"]')).toBeNull();
    const res = (await bob.goto(`${reg.url}/ui/users`, { waitUntil: "load" }))!;
    expect(res.status()).toBe(403);
    expect(await text(bob, "#error-message")).toContain("admin");
    await screenshot(bob, "10-non-admin-refused");
    // bob's rule now grants push only: no repository is listed for him.
    await bob.goto(`${reg.url}/ui/repos`, { waitUntil: "load" });
    expect(await text(bob, "#main")).toContain("No repositories you may pull");
    expect(bobProblems).toEqual([]);
    await ctx.close();
  });

  test("no page broke the Content-Security-Policy or threw a script error", () => {
    expect(problems).toEqual([]);
  });
});
