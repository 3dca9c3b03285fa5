// `docker cloister`: docker 20.10's CLI finds docker-cloister in $DOCKER_CONFIG/cli-plugins (put
// there by `cloister docker-plugin install`), lists it, and runs it; the plugin pushes to a
// token-mode registry with docker's stored credentials — from a credential helper and from an
// inline config.json entry, as `docker login` leaves them — and without them it is refused
// with exit code 3.
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type RunningRegistry } from "./helpers/registry";
import { needClients, run } from "./helpers/exec";
import { DOCKER_CLI } from "./helpers/docker";
import { startTokenRegistry } from "./helpers/token";
import { buildBigImage, cloister, type BigImage } from "./helpers/big-image";

const PW = "alice-plugin-password";
const clients = needClients("cli-docker-plugin.e2e", [DOCKER_CLI, "tar"]);
let reg: RunningRegistry;
let work: string;
let img: BigImage;
let config: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  if (clients.skip) return;
  clients.assert();
  work = mkdtempSync(join(tmpdir(), "cloister-e2e-plugin-"));
  config = join(work, "docker-config");
  const bin = join(work, "bin");
  mkdirSync(bin);
  // A credential helper that knows alice's password and records each request.
  writeFileSync(
    join(bin, "docker-credential-cltest"),
    `#!/bin/sh\nread host\necho "$1 $host" >> ${join(work, "helper.log")}\nprintf '{"ServerURL":"%s","Username":"alice","Secret":"${PW}"}' "$host"\n`,
  );
  chmodSync(join(bin, "docker-credential-cltest"), 0o755);
  env = { PATH: `${bin}:${process.env.PATH}`, HOME: work, DOCKER_CONFIG: config };
  [reg, img] = await Promise.all([startTokenRegistry({ alice: PW }), buildBigImage(join(work, "layout"), 1_000_000)]);
  await cloister(["docker-plugin", "install"], { env });
});

afterAll(async () => {
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const docker = (args: string[], o: { allowFail?: boolean } = {}) => run(DOCKER_CLI, args, { env, timeoutMs: 120_000, ...o });
const pushArgs = (repo: string) => ["cloister", "--json", "push", "--tls-verify=false", `oci:${img.dir}:${img.tag}`, `${reg.host}/alice/${repo}:1`];

describe.skipIf(clients.skip)("docker cloister (CLI plugin)", () => {
  test("docker lists the plugin and runs it", async () => {
    const help = await docker(["--help"]);
    expect(help.stdout).toMatch(/^\s+cloister\*\s+Push and pull images in chunks/m);
    const sub = await docker(["cloister", "push", "--help"]);
    expect(sub.stdout).toMatch(/--chunk-size/);
  });

  test("pushes with docker's credential helper", async () => {
    writeFileSync(join(config, "config.json"), JSON.stringify({ credHelpers: { [reg.host]: "cltest" } }));
    const r = await docker(pushArgs("via-helper"));
    expect(JSON.parse(r.stdout).digest).toBe(img.manifestDigest);
    expect(readFileSync(join(work, "helper.log"), "utf8")).toContain(`get ${reg.host}`);
  });

  test("pushes with an inline config.json auth entry, as docker login writes it", async () => {
    const auth = Buffer.from(`alice:${PW}`).toString("base64");
    writeFileSync(join(config, "config.json"), JSON.stringify({ auths: { [reg.host]: { auth } } }));
    const r = await docker(pushArgs("via-auths"));
    expect(JSON.parse(r.stdout).digest).toBe(img.manifestDigest);
  });

  test("--mount-from in token mode: one token for both repositories, blobs mounted", async () => {
    // config.json still holds the inline entry from the test before.
    const r = await docker(["cloister", "--json", "copy", "--tls-verify=false", "--mount-from", "alice/via-auths",
      `docker://${reg.host}/alice/via-auths:1`, `docker://${reg.host}/alice/mounted:1`]);
    const s = JSON.parse(r.stdout);
    expect(s.digest).toBe(img.manifestDigest);
    expect(s.mounted).toBe(s.blobs);
    expect(s.transferred).toBe(0);
  });

  test("without stored credentials it is refused, exit code 3", async () => {
    writeFileSync(join(config, "config.json"), "{}");
    const r = await docker(pushArgs("no-creds"), { allowFail: true });
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/401|UNAUTHORIZED|DENIED/);
    expect(r.stderr).toMatch(new RegExp(`no credentials for ${reg.host}`));
  });
});
