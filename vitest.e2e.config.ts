import { defineConfig } from "vitest/config";

// End-to-end tests: real clients (skopeo, umoci, curl, docker, podman, buildah, ctr) against a
// real `wrangler dev` process. Runs in Node (not workerd). One file at a time: each file starts
// its own registry (and dockerd/containerd where needed), and the machine has 2 cores.
export default defineConfig({
  test: {
    include: ["test/e2e/**/*.e2e.test.ts"],
    environment: "node",
    pool: "forks",
    fileParallelism: false,
    testTimeout: 10 * 60_000,
    hookTimeout: 3 * 60_000,
    teardownTimeout: 60_000,
    reporters: ["verbose"],
    env: {
      WRANGLER_SEND_METRICS: "false",
      WRANGLER_HIDE_BANNER: "true",
      CLOUDFLARE_CF_FETCH_ENABLED: "false",
    },
  },
});
