#!/usr/bin/env node
// docker-cloister: the `cloister` CLI as a docker CLI plugin, so that
// `docker cloister push app:1 reg.example/team/app:1` works. Install it with
// `cloister docker-plugin install` (a link in $DOCKER_CONFIG/cli-plugins, ~/.docker/cli-plugins
// by default). Docker runs a plugin as `docker-cloister docker-cli-plugin-metadata` to list it,
// and as `docker-cloister cloister <args…>` to run it. Credentials come from docker's own store
// (config.json and credential helpers) through bin/lib/credentials.mjs, as for `cloister`.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);

if (args[0] === "docker-cli-plugin-metadata") {
  const { version } = JSON.parse(readFileSync(join(here, "..", "package.json"), "utf8"));
  process.stdout.write(
    JSON.stringify({
      SchemaVersion: "0.1.0",
      Vendor: "cloister",
      Version: version,
      ShortDescription: "Push and pull images in chunks (cloister registry CLI)",
    }) + "\n",
  );
} else {
  if (args[0] === "cloister") args.shift();
  process.argv = [process.argv[0], join(here, "cloister.mjs"), ...args];
  await import("./cloister.mjs");
}
