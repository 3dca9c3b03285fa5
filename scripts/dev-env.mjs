// Worker variables and secrets for `npm start`, kept off the command line: wrangler reads them
// from a private env file (`wrangler dev --env-file`) instead of `--var NAME:value`, which npm
// echoes into the log and `ps` shows to every user of the machine.
//
// Sources, later wins: .dev.vars, then the process environment for the names the Worker reads
// (every key of wrangler.toml [vars], commented-out ones included, the auth secrets, and every
// key .dev.vars sets). `--var` on the command line still overrides both (wrangler applies it last).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseEnv } from "node:util";

/** Secrets and auth settings that wrangler.toml documents but does not set. */
export const SECRET_NAMES = ["ADMIN_PASSWORD", "TOKEN_SIGNING_KEYS"];
const ALWAYS = ["AUTH_MODE", "AUTH_REALM", "AUTH_SERVICE", ...SECRET_NAMES];

const readOr = (path, dflt) => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return dflt;
  }
};

/** Keys under [vars] in wrangler.toml, including commented examples (`# AUTH_REALM = …`). */
export function varNames(wranglerToml) {
  const names = [];
  let inVars = false;
  for (const line of wranglerToml.split("\n")) {
    const section = /^\s*\[+([^\]]+)\]+/.exec(line);
    if (section) {
      inVars = section[1].trim() === "vars";
      continue;
    }
    const m = inVars && /^\s*#?\s*([A-Z][A-Z0-9_]*)\s*=/.exec(line);
    if (m) names.push(m[1]);
  }
  return names;
}

/**
 * The variables to hand to wrangler: .dev.vars (unless the user passed their own --env-file,
 * which makes wrangler skip .dev.vars) overlaid with the matching names from `environ`.
 */
export function devVars(root, environ, { readDevVars = true } = {}) {
  const fromFile = readDevVars ? parseEnv(readOr(join(root, ".dev.vars"), "")) : {};
  const names = new Set([...varNames(readOr(join(root, "wrangler.toml"), "")), ...ALWAYS, ...Object.keys(fromFile)]);
  const vars = { ...fromFile };
  const fromEnv = [];
  for (const name of names) {
    if (environ[name] !== undefined) {
      vars[name] = environ[name];
      fromEnv.push(name);
    }
  }
  return { vars, fromEnv };
}

// wrangler reads the file with dotenv, then dotenv-expand: `$NAME` and `${…}` would be expanded
// (to "" here), so every `$` is written as `\$`, which dotenv-expand turns back into `$`. dotenv
// has no escapes inside quotes, so the value is quoted with a quote character it does not contain
// (double quotes last: dotenv turns `\n` in them into a newline). What cannot be carried that
// way is refused with a message rather than passed on changed.
function quote(name, value) {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`variable name ${JSON.stringify(name)} is not valid in an env file`);
  if (/[\r\n]/.test(value)) throw new Error(`${name} contains a line break, which an env file cannot carry`);
  if (value.endsWith("\\")) throw new Error(`${name} ends with a backslash, which an env file cannot carry`);
  const v = value.replace(/\$/g, "\\$");
  for (const q of ["'", "`"]) if (!v.includes(q)) return `${name}=${q}${v}${q}`;
  if (!v.includes('"') && !/\\[nr]/.test(v)) return `${name}="${v}"`;
  throw new Error(`${name} contains ', \` and " at once, which an env file cannot carry`);
}

/** Writes vars to a fresh 0600 file in a 0700 temp dir; returns its path and a remover. */
export function writeEnvFile(vars) {
  const text = Object.entries(vars).map(([k, v]) => quote(k, String(v))).join("\n") + "\n"; // may throw: before mkdtemp
  const dir = mkdtempSync(join(tmpdir(), "cloister-start-"));
  chmodSync(dir, 0o700);
  const path = join(dir, "vars.env");
  writeFileSync(path, text, { mode: 0o600 });
  return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
