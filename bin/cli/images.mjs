// Image commands: copy, push, pull (skopeo's transport syntax; chunked, resumable, parallel
// uploads) and cache push|fetch (build-cache/v1). See docs/cli.md and docs/adr/0015-cli-transfer.md.
import { Option } from "commander";
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { RegistryError, EXIT, connect } from "../lib/registry-client.mjs";
import { credentialsFor, dockerConfigDir } from "../lib/credentials.mjs";
import { parseTransport, parseLoose } from "./transfer/transports.mjs";
import { ociSource, dockerArchiveSource, dockerDaemonSource, registrySource } from "./transfer/sources.mjs";
import { ociDestination, dockerArchiveDestination } from "./transfer/destinations.mjs";
import { RegistryDestination } from "./transfer/upload.mjs";
import { copyImage } from "./transfer/copy.mjs";
import { createProgress, fmtBytes } from "./transfer/progress.mjs";
import { runCache } from "./transfer/cache.mjs";

const USER_AGENT = "cloister/0.1";

function parseSize(s) {
  const m = /^(\d+)\s*(k|kib|kb|m|mib|mb|g|gib|gb)?$/i.exec(String(s).trim());
  if (!m) throw new RegistryError(`invalid size ${JSON.stringify(s)} (e.g. 16MiB)`, { exitCode: EXIT.USAGE });
  const mult = { k: 1024, kib: 1024, kb: 1000, m: 1 << 20, mib: 1 << 20, mb: 1e6, g: 1 << 30, gib: 1 << 30, gb: 1e9 };
  const n = Number(m[1]) * (m[2] ? mult[m[2].toLowerCase()] : 1);
  if (n < 64 * 1024) throw new RegistryError("--chunk-size must be at least 64KiB", { exitCode: EXIT.USAGE });
  return n;
}

function parseJobs(s) {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1 || n > 32) throw new RegistryError("--jobs must be an integer from 1 to 32", { exitCode: EXIT.USAGE });
  return n;
}

/** A bare NAME[:TAG] given with --server becomes SERVER-HOST/NAME[:TAG]. */
function withServer(text, server) {
  if (!server || /^(docker|oci|docker-archive|docker-daemon):/.test(text) || text.includes("://")) return text;
  const first = text.split("/")[0];
  if (text.includes("/") && (first.includes(".") || first.includes(":") || first === "localhost")) return text;
  // --server may be a URL or a bare host[:port] (then the scheme is found when connecting).
  const u = /^[a-z]+:\/\//i.test(server) ? new URL(server) : null;
  return u ? `${u.protocol}//${u.host}/${text}` : `${server.replace(/\/+$/, "")}/${text}`;
}

async function registryClient(ref, o, extraScope = []) {
  const creds = credentialsFor(ref.host, { user: o.user, password: o.password });
  if (!creds) (o.anonymousHosts ??= new Set()).add(ref.host);
  return connect({
    host: ref.host,
    scheme: ref.scheme,
    plainHttp: o.plainHttp,
    insecure: o.tlsVerify === false,
    user: creds?.user,
    password: creds?.password,
    maxSockets: o.jobs + 2,
    userAgent: USER_AGENT,
    scope: [`repository:${ref.repo}:pull`, ...extraScope],
  });
}

async function openSource(t, o, progress) {
  switch (t.transport) {
    case "oci":
      return { src: await ociSource(t.path, t.ref) };
    case "docker-archive":
      return { src: await dockerArchiveSource(t.path, t.ref) };
    case "docker-daemon": {
      let last = 0;
      const src = await dockerDaemonSource(t.name, {
        onSpool: (n) => {
          if (n - last >= 256 << 20) progress.note(`reading ${t.name} from the docker daemon: ${fmtBytes((last = n))}`);
        },
      });
      return { src };
    }
    case "docker": {
      const client = await registryClient(t, o);
      return { src: await registrySource(client, t), client };
    }
  }
}

async function openDestination(t, o) {
  switch (t.transport) {
    case "oci":
      return { dst: await ociDestination(t.path, t.ref) };
    case "docker-archive":
      return { dst: await dockerArchiveDestination(t.path, t.ref) };
    case "docker": {
      const mountFrom = o.mountFrom ?? [];
      const client = await registryClient(t, o, [`repository:${t.repo}:pull,push`, ...mountFrom.map((r) => `repository:${r}:pull`)]);
      const dst = new RegistryDestination(client, t, { chunkSize: o.chunkSize, mountFrom, log: o.log });
      return { dst, client };
    }
    case "docker-daemon":
      throw new RegistryError("docker-daemon: is a source only; to load into docker, copy to docker-archive:FILE and `docker load -i FILE`, or `docker pull`", { exitCode: EXIT.USAGE });
  }
}

async function runCopy(srcText, dstText, o) {
  const srcT = parseTransport(srcText);
  const dstT = parseTransport(dstText);
  const progress = createProgress({ quiet: o.quiet || o.json, notes: !o.quiet });
  o.log = (m) => progress.note(m);
  const opened = [];
  const t0 = Date.now();
  try {
    const s = await openSource(srcT, o, progress);
    opened.push(s);
    const d = await openDestination(dstT, o);
    opened.push(d);
    const reference = dstT.transport === "docker" ? dstT.digest ?? dstT.tag : dstT.ref ?? null;
    const r = await copyImage(s.src, d.dst, { jobs: o.jobs, progress, reference, platform: o.platform });
    progress.stop();
    const st = d.dst.stats;
    const summary = {
      source: s.src.name,
      destination: d.dst.name,
      reference: r.reference,
      digest: r.digest,
      mediaType: r.mediaType,
      manifests: r.manifests,
      blobs: r.blobs,
      bytes: r.bytes,
      transferred: st.uploaded,
      transferredBytes: st.uploadedBytes,
      skipped: st.skipped,
      skippedBytes: st.skippedBytes,
      mounted: st.mounted,
      chunks: st.chunks,
      chunkSize: st.chunkSize ?? null,
      resumes: st.resumes,
      seconds: (Date.now() - t0) / 1000,
    };
    if (o.json) process.stdout.write(JSON.stringify(summary) + "\n");
    else
      process.stdout.write(
        `copied ${summary.source} → ${summary.destination}:${summary.reference} (${summary.digest})\n` +
          `  ${summary.blobs} blobs, ${fmtBytes(summary.bytes)}: ${summary.transferred} ${dstT.transport === "docker" ? "uploaded" : "written"} (${fmtBytes(summary.transferredBytes)}${summary.chunks ? ` in ${summary.chunks} chunks` : ""}), ${summary.skipped} already there, ${summary.mounted} mounted` +
          `${summary.resumes ? `, ${summary.resumes} resumed` : ""}; ${summary.seconds.toFixed(1)} s\n`,
      );
    return summary;
  } catch (err) {
    if (err.exitCode === EXIT.AUTH && o.anonymousHosts?.size)
      err.message += `\n(no credentials for ${[...o.anonymousHosts].join(", ")}: pass --user/--password, set CLOISTER_USER/CLOISTER_PASSWORD, or \`docker login\`)`;
    throw err;
  } finally {
    progress.stop();
    for (const x of opened.reverse()) {
      await x.src?.close?.();
      await x.dst?.close?.();
      x.client?.close();
    }
  }
}

/** Options every image command takes. */
function transferOptions(cmd) {
  return cmd
    .option("--user <user>", "registry user (or CLOISTER_USER; else docker's stored credentials)")
    .option("--password <password>", "registry password or token (or CLOISTER_PASSWORD)")
    .option("--plain-http", "talk plain HTTP to registries (automatic for 127.0.0.1 and localhost)")
    .option("--tls-verify <bool>", "verify registry TLS certificates", (v) => !/^(false|0|no)$/i.test(v), true)
    .addOption(new Option("--chunk-size <size>", "largest PATCH body, e.g. 16MiB (default: the registry's OCI-Chunk-Max-Length, else 64MiB)").argParser(parseSize))
    .addOption(new Option("-j, --jobs <n>", "blobs transferred at once").argParser(parseJobs).default(4))
    .option("--mount-from <repo>", "try to mount blobs from this repository of the destination registry (repeatable)", (v, acc) => [...(acc ?? []), v])
    .option("--platform <os/arch>", "with an index and a docker-archive destination: the platform to take")
    .option("-q, --quiet", "no progress output");
}

const usageExit = (err) => process.exit(err.exitCode === 0 ? 0 : EXIT.USAGE);

/** @param {import("commander").Command} program */
export function register(program) {
  // Under --json a failure also goes to stderr as one JSON line, as the operator commands do.
  const action = (fn) =>
    async function (...args) {
      const cmd = args[args.length - 1];
      const o = cmd.optsWithGlobals();
      try {
        await fn(...args.slice(0, -2), o);
      } catch (err) {
        if (o.json && err instanceof RegistryError)
          process.stderr.write(JSON.stringify({ error: { message: err.message, status: err.status ?? null, code: err.code ?? null, exitCode: err.exitCode } }) + "\n");
        throw err;
      }
    };

  transferOptions(
    program
      .command("copy")
      .description("copy an image between transports: docker://REG/NAME:TAG, oci:PATH[:REF], docker-archive:PATH[:NAME:TAG], docker-daemon:NAME:TAG (source only)")
      .argument("<source>")
      .argument("<destination>"),
  )
    .exitOverride(usageExit)
    .action(action((src, dst, o) => runCopy(withServer(src, o.server), withServer(dst, o.server), o)));

  transferOptions(
    program
      .command("push")
      .description("push an image to a registry in chunks; SOURCE defaults to docker-daemon:, DESTINATION is REG/NAME:TAG")
      .argument("<source>", "docker-daemon:NAME:TAG (default for a bare NAME:TAG), docker-archive:PATH, oci:PATH[:REF]")
      .argument("<destination>", "REGISTRY/NAME[:TAG] (docker:// optional)"),
  )
    .exitOverride(usageExit)
    .action(
      action((src, dst, o) => {
        const s = parseLoose(src, { preferRegistry: false });
        const d = parseLoose(withServer(dst, o.server), { preferRegistry: true });
        if (d.transport !== "docker") throw new RegistryError("push goes to a registry: REGISTRY/NAME:TAG", { exitCode: EXIT.USAGE });
        return runCopy(s.text, d.text, o);
      }),
    );

  transferOptions(
    program
      .command("pull")
      .description("pull an image from a registry into an OCI layout (oci:PATH, the default for a bare PATH) or a docker-archive:PATH")
      .argument("<source>", "REGISTRY/NAME[:TAG|@DIGEST] (docker:// optional)")
      .argument("<destination>", "oci:PATH[:REF] or docker-archive:PATH[:NAME:TAG]"),
  )
    .exitOverride(usageExit)
    .action(
      action((src, dst, o) => {
        const s = parseLoose(withServer(src, o.server), { preferRegistry: true });
        const d = /^(oci|docker-archive|docker-daemon|docker):/.test(dst) ? parseTransport(dst) : parseTransport(`oci:${dst}`);
        if (s.transport !== "docker") throw new RegistryError("pull reads from a registry: REGISTRY/NAME:TAG", { exitCode: EXIT.USAGE });
        return runCopy(s.text, d.text, o);
      }),
    );

  registerDockerPlugin(program);

  program
    .command("cache")
    .description("build-cache/v1: `cloister cache push DIR REG/REPO:TAG`, `cloister cache fetch REG/REPO:TAG DIR` (see `cloister cache --help`)")
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument("[args...]")
    .action(async (args, _opts, cmd) => {
      const g = cmd.optsWithGlobals();
      const code = await runCache([...args, ...(g.json ? ["--json"] : [])]);
      process.exitCode = code;
    });
}

/** `cloister docker-plugin install|uninstall`: link bin/docker-cloister.mjs into docker's cli-plugins. */
export function registerDockerPlugin(program) {
  const plugin = program.command("docker-plugin").description("install `docker cloister` (a docker CLI plugin)");
  const dirOf = (o) => o.dir ?? join(dockerConfigDir(), "cli-plugins");
  plugin
    .command("install")
    .description("link docker-cloister into $DOCKER_CONFIG/cli-plugins (default ~/.docker/cli-plugins)")
    .option("--dir <dir>", "the cli-plugins directory")
    .action(async (o) => {
      const dir = dirOf(o);
      const target = join(dir, "docker-cloister");
      await mkdir(dir, { recursive: true });
      await rm(target, { force: true });
      await symlink(fileURLToPath(new URL("../docker-cloister.mjs", import.meta.url)), target);
      process.stdout.write(`installed ${target}; try: docker cloister --help\n`);
    });
  plugin
    .command("uninstall")
    .description("remove the docker-cloister link")
    .option("--dir <dir>", "the cli-plugins directory")
    .action(async (o) => {
      await rm(join(dirOf(o), "docker-cloister"), { force: true });
    });
}
