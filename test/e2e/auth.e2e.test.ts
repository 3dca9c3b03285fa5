// Token auth with real clients: a registry started in token mode with an ADMIN_PASSWORD, users
// and a robot created through the admin API, `skopeo login` and `--creds` pushes into the
// pusher's own namespace, the same push refused for another user, a repository made public
// by a policy and pulled with `--no-creds`, catalog filtering, mount sources and immutable tags.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { Skopeo, needClients } from "./helpers/exec";
import { request, describe as show } from "./helpers/http";
import { buildLayout, type Layout } from "./helpers/images";

const ADMIN_PW = "e2e-admin-password";
const ALICE_PW = "alice-e2e-password";
const BOB_PW = "bob-e2e-password";
const admin = { Authorization: `Basic ${Buffer.from(`admin:${ADMIN_PW}`).toString("base64")}` };

let reg: RunningRegistry;
let skopeo: Skopeo;
let work: string;
let layout: Layout;

const clients = needClients("auth.e2e", ["skopeo", "umoci"]);

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-auth-"));
  const [r, l] = await Promise.all([
    startRegistry({ vars: { AUTH_MODE: "token", ADMIN_PASSWORD: ADMIN_PW } }),
    buildLayout(join(work, "layout"), work),
  ]);
  reg = r;
  layout = l;
  skopeo = new Skopeo(reg);
});

afterAll(async () => {
  await reg?.stop();
  skopeo?.cleanup();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function adminPost(path: string, body: unknown) {
  const r = await request(reg, "POST", path, { headers: { ...admin, "Content-Type": "application/json" }, body: JSON.stringify(body) });
  expect(r.status, `POST ${path}: ${show(r)}`).toBe(201);
  return r.json();
}

const src = () => `oci:${layout.dir}:amd64`;
const copy = (args: string[], allowFail = false) => skopeo.run("copy", args, { allowFail });

describe.skipIf(clients.skip)("token auth with skopeo", () => {
  test("the registry is closed: GET /v2/ challenges with the token realm", async () => {
    const r = await request(reg, "GET", "/v2/");
    expect(r.status).toBe(401);
    expect(r.headers["www-authenticate"]).toBe(`Bearer realm="${reg.url}/token",service="${reg.host}"`);
    expect(r.json().errors[0].code).toBe("UNAUTHORIZED");
    const anon = await request(reg, "GET", "/v2/alice/busybox/tags/list");
    expect(anon.status).toBe(401);
    expect(anon.headers["www-authenticate"]).toContain(`scope="repository:alice/busybox:pull"`);
  });

  test("the admin creates users; bad input is refused with OCI-style errors", async () => {
    expect((await request(reg, "GET", "/admin/users")).status).toBe(401);
    await adminPost("/admin/users", { name: "alice", password: ALICE_PW });
    await adminPost("/admin/users", { name: "bob", password: BOB_PW });
    const bad = await request(reg, "POST", "/admin/users", { headers: { ...admin, "Content-Type": "application/json" }, body: '{"name":"Bad Name","password":"x"}' });
    expect(bad.status).toBe(400);
    expect(bad.json().errors[0].code).toBe("BAD_REQUEST");
  });

  test("skopeo login, then push into the user's own namespace", async () => {
    const login = await skopeo.run("login", ["--tls-verify=false", "-u", "alice", "-p", ALICE_PW, reg.host]);
    expect(login.stdout + login.stderr).toMatch(/Login Succeeded/i);
    await copy(["--preserve-digests", src(), skopeo.ref("alice/busybox:1")]);
    const raw = await skopeo.run("inspect", ["--raw", skopeo.ref("alice/busybox:1")]);
    expect(raw.stdout).toContain(layout.images.amd64.manifest.layers[0].digest);
    await skopeo.run("logout", [reg.host]);
  });

  test("a wrong password fails skopeo login", async () => {
    const r = await skopeo.run("login", ["--tls-verify=false", "-u", "alice", "-p", "not-her-password", reg.host], { allowFail: true });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/invalid username\/password|unauthorized|401/i);
  });

  test("another user is refused in alice's namespace but may push into their own", async () => {
    const refused = await copy(["--dest-creds", `bob:${BOB_PW}`, src(), skopeo.ref("alice/busybox:bob")], true);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/denied|unauthorized|authentication required|insufficient/i);
    const read = await skopeo.run("inspect", ["--raw", "--creds", `bob:${BOB_PW}`, skopeo.ref("alice/busybox:1")], { allowFail: true });
    expect(read.code).not.toBe(0);
    await copy(["--dest-creds", `bob:${BOB_PW}`, src(), skopeo.ref("bob/busybox:1")]);
    const tags = await skopeo.run("list-tags", ["--creds", `bob:${BOB_PW}`, skopeo.ref("bob/busybox")]);
    expect(JSON.parse(tags.stdout).Tags).toEqual(["1"]);
  });

  test("a robot account pushes with its one-time secret, within its rules", async () => {
    const robot = await adminPost("/admin/robots", { owner: "alice", name: "ci", access: [{ repositories: "alice/ci/**", actions: ["pull", "push"] }] });
    expect(robot.account).toBe("robot$alice+ci");
    await copy(["--dest-creds", `${robot.account}:${robot.secret}`, src(), skopeo.ref("alice/ci/busybox:1")]);
    const outside = await copy(["--dest-creds", `${robot.account}:${robot.secret}`, src(), skopeo.ref("alice/busybox:robot")], true);
    expect(outside.code).not.toBe(0);
  });

  test("anonymous pull works once a policy makes the repository public", async () => {
    const before = await skopeo.run("inspect", ["--raw", "--no-creds", skopeo.ref("alice/busybox:1")], { allowFail: true });
    expect(before.code).not.toBe(0);
    await adminPost("/admin/policies", { id: "public-alice-busybox", effect: "allow", subjects: ["anonymous"], actions: ["pull"], repositories: ["alice/busybox"] });
    const after = await skopeo.run("inspect", ["--raw", "--no-creds", skopeo.ref("alice/busybox:1")]);
    expect(after.stdout).toContain(layout.images.amd64.manifest.layers[0].digest);
    const out = join(work, "pulled");
    await copy(["--src-no-creds", skopeo.ref("alice/busybox:1"), `oci:${out}:1`]);
    // Public means pull only.
    const push = await copy(["--dest-no-creds", src(), skopeo.ref("alice/busybox:anon")], true);
    expect(push.code).not.toBe(0);
    // Signed-in users may pull a public repository too.
    await skopeo.run("inspect", ["--raw", "--creds", `bob:${BOB_PW}`, skopeo.ref("alice/busybox:1")]);
  });

  test("the catalog only lists repositories the caller may pull", async () => {
    const bob = { Authorization: `Basic ${Buffer.from(`bob:${BOB_PW}`).toString("base64")}` };
    const r = await request(reg, "GET", "/v2/_catalog", { headers: bob });
    expect(r.status, show(r)).toBe(200);
    expect(r.json().repositories).toEqual(["alice/busybox", "bob/busybox"]); // own + public, not alice/ci/busybox
    const all = await request(reg, "GET", "/v2/_catalog", { headers: admin });
    expect(all.json().repositories).toEqual(["alice/busybox", "alice/ci/busybox", "bob/busybox"]);
    expect((await request(reg, "GET", "/v2/_catalog")).status).toBe(401);
  });

  test("a cross-repository mount needs pull on the source", async () => {
    const layer = layout.images.amd64.manifest.layers[0].digest;
    const alice = { Authorization: `Basic ${Buffer.from(`alice:${ALICE_PW}`).toString("base64")}` };
    const bob = { Authorization: `Basic ${Buffer.from(`bob:${BOB_PW}`).toString("base64")}` };
    const denied = await request(reg, "POST", `/v2/bob/mounted/blobs/uploads/?mount=${layer}&from=alice/ci/busybox`, { headers: bob });
    expect(denied.status, show(denied)).toBe(202); // a plain upload session instead: nothing leaks
    const allowed = await request(reg, "POST", `/v2/alice/mounted/blobs/uploads/?mount=${layer}&from=alice/ci/busybox`, { headers: alice });
    expect(allowed.status, show(allowed)).toBe(201);
  });

  test("immutable tags cannot be moved, only re-pushed unchanged", async () => {
    await adminPost("/admin/policies", { id: "alice-releases", kind: "immutable-tags", repositories: "alice/busybox", tags: ["1", "v*"] });
    const creds = ["--dest-creds", `alice:${ALICE_PW}`];
    const moved = await copy([...creds, `oci:${layout.dir}:arm64`, skopeo.ref("alice/busybox:1")], true);
    expect(moved.code).not.toBe(0);
    expect(moved.stderr).toMatch(/immutable|denied/i);
    await copy([...creds, "--preserve-digests", src(), skopeo.ref("alice/busybox:1")]); // same digest: fine
    await copy([...creds, `oci:${layout.dir}:arm64`, skopeo.ref("alice/busybox:2")]); // not covered
    const del = await skopeo.run("delete", ["--creds", `alice:${ALICE_PW}`, skopeo.ref("alice/busybox:1")], { allowFail: true });
    expect(del.code).not.toBe(0);
    const raw = await skopeo.run("inspect", ["--raw", "--no-creds", skopeo.ref("alice/busybox:1")]);
    expect(raw.stdout).toContain(layout.images.amd64.manifest.layers[0].digest);
  });

  test("explain says why", async () => {
    const r = await request(reg, "GET", "/admin/explain?subject=user:bob&action=push&repository=alice/busybox", { headers: admin });
    expect(r.status).toBe(200);
    expect(r.json()).toMatchObject({ allowed: false, reason: "no rule allows it (default deny)" });
  });
});
