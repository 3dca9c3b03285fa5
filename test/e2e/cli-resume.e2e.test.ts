// A chunked push resumes: a proxy between `cloister push` and the registry cuts the connection
// in the middle of the first PATCH (or answers 502 there, as a front does when its origin goes
// away); cloister asks the upload's status, continues from its Range, and the blob the registry
// stores is byte-identical (it verifies the digest on close, and we pull it back).
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startRegistry, type RunningRegistry } from "./helpers/registry";
import { needClients } from "./helpers/exec";
import { buildBigImage, cloister, type BigImage } from "./helpers/big-image";
import { startCutProxy } from "./helpers/cut-proxy";
import { request, sha256 } from "./helpers/http";

const CHUNK = 6 * 1024 * 1024;
const clients = needClients("cli-resume.e2e", ["tar"]);
let reg: RunningRegistry;
let work: string;
let img: BigImage;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-cli-resume-"));
  // Plain HTTP so the proxy can read the requests; a short lease so a cut writer's lease lapses fast.
  [reg, img] = await Promise.all([
    startRegistry({ https: false, vars: { UPLOAD_LEASE_SECONDS: "3" } }),
    buildBigImage(join(work, "layout"), 20_000_000),
  ]);
});

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

async function pushThroughProxy(mode: "drop" | "502", repo: string) {
  const [h, port] = reg.host.split(":");
  const proxy = await startCutProxy({ host: h, port: Number(port) }, { afterBytes: 2_500_000, mode });
  try {
    const r = await cloister(["--json", "push", "--chunk-size", String(CHUNK), `oci:${img.dir}:${img.tag}`, `${proxy.host}/${repo}:1`], { timeoutMs: 120_000 });
    expect(proxy.cuts(), "the proxy cut a PATCH").toBe(1);
    return { summary: JSON.parse(r.stdout), stderr: r.stderr };
  } finally {
    await proxy.close();
  }
}

async function expectStored(repo: string) {
  const m = await request(reg, "GET", `/v2/${repo}/manifests/1`, { headers: { Accept: "application/vnd.oci.image.manifest.v1+json" } });
  expect(m.status).toBe(200);
  expect(`sha256:${sha256(m.body)}`).toBe(img.manifestDigest);
  const blob = await request(reg, "GET", `/v2/${repo}/blobs/${img.layerDigest}`);
  expect(blob.status).toBe(200);
  expect(blob.body.length).toBe(img.layerSize);
  expect(`sha256:${sha256(blob.body)}`).toBe(img.layerDigest);
}

describe.skipIf(clients.skip)("cloister push resumes a chunked upload", () => {
  test("a connection cut mid-chunk: continues from the upload's Range", async () => {
    const { summary, stderr } = await pushThroughProxy("drop", "e2e/resume-drop");
    expect(summary.resumes, stderr).toBeGreaterThanOrEqual(1);
    expect(summary.digest).toBe(img.manifestDigest);
    expect(stderr).toMatch(/resuming/);
    await expectStored("e2e/resume-drop");
  });

  test("a 502 mid-chunk: continues from the upload's Range", async () => {
    const { summary, stderr } = await pushThroughProxy("502", "e2e/resume-502");
    expect(summary.resumes, stderr).toBeGreaterThanOrEqual(1);
    expect(stderr).toMatch(/502/);
    await expectStored("e2e/resume-502");
  });
});
