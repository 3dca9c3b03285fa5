// Registry credentials for the CLIs, in order: --user/--password, CLOISTER_USER/CLOISTER_PASSWORD,
// then docker's own store ($DOCKER_CONFIG/config.json or ~/.docker/config.json): a credential
// helper for the host (credHelpers), the default store (credsStore), or an inline `auth` entry.
// Reusing docker's store means `docker login` once serves `cloister` and `docker cloister` too.
import { readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { homedir } from "node:os";
import { join } from "node:path";
import { RegistryError, EXIT } from "./registry-client.mjs";

export function dockerConfigDir(env = process.env) {
  return env.DOCKER_CONFIG || join(homedir(), ".docker");
}

function readDockerConfig(env) {
  try {
    return JSON.parse(readFileSync(join(dockerConfigDir(env), "config.json"), "utf8"));
  } catch (err) {
    if (err.code === "ENOENT") return {};
    throw new RegistryError(`cannot read ${join(dockerConfigDir(env), "config.json")}: ${err.message}`);
  }
}

/** Ask `docker-credential-<helper> get` for `host`; null when it has none. */
function fromHelper(helper, host) {
  const r = spawnSync(`docker-credential-${helper}`, ["get"], { input: host, encoding: "utf8", timeout: 30_000 });
  if (r.error) throw new RegistryError(`credential helper docker-credential-${helper}: ${r.error.message}`, { exitCode: EXIT.AUTH });
  if (r.status !== 0) {
    if (/credentials not found/i.test(r.stdout + r.stderr)) return null;
    throw new RegistryError(`docker-credential-${helper} get ${host} failed: ${(r.stderr || r.stdout).trim()}`, { exitCode: EXIT.AUTH });
  }
  const j = JSON.parse(r.stdout);
  // An identity token (Username "<token>") is an OAuth refresh token; cloister takes it as a password.
  return j.Secret ? { user: j.Username, password: j.Secret } : null;
}

/**
 * Credentials for `host` (host[:port]) or undefined. `explicit` carries --user/--password.
 * @returns {{user: string, password: string, source: string} | undefined}
 */
export function credentialsFor(host, explicit = {}, env = process.env) {
  if (explicit.user !== undefined) return { user: explicit.user, password: explicit.password ?? "", source: "flags" };
  if (env.CLOISTER_USER !== undefined) return { user: env.CLOISTER_USER, password: env.CLOISTER_PASSWORD ?? "", source: "environment" };
  const cfg = readDockerConfig(env);
  const keys = [host, `https://${host}`, `http://${host}`, `https://${host}/v1/`, `https://${host}/v2/`];
  const helper = cfg.credHelpers?.[host];
  if (helper) {
    const c = fromHelper(helper, host);
    if (c) return { ...c, source: `docker-credential-${helper}` };
  }
  const entry = keys.map((k) => cfg.auths?.[k]).find(Boolean);
  if (entry?.auth) {
    const text = Buffer.from(entry.auth, "base64").toString("utf8");
    const i = text.indexOf(":");
    if (i > 0) return { user: text.slice(0, i), password: text.slice(i + 1), source: "docker config.json" };
  }
  if (cfg.credsStore) {
    const c = fromHelper(cfg.credsStore, host);
    if (c) return { ...c, source: `docker-credential-${cfg.credsStore}` };
  }
  return undefined;
}
