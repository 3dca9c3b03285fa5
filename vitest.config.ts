import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { defineConfig } from "vitest/config";

// Unit and integration tests run inside workerd with real (local) R2 and Durable Objects.
export default defineConfig({
  plugins: [
    cloudflareTest({
      wrangler: { configPath: "./wrangler.toml" },
      miniflare: {
        // Small parts so modest test blobs span several R2 multipart parts. Tests address the
        // Worker as http://registry.test, which token mode only serves when listed (docs/auth.md).
        bindings: { REQUEST_LOG: "off", MAX_BODY_BYTES: "0", UPLOAD_PART_BYTES: "5242880", REGISTRY_HOSTS: "registry.test" },
      },
    }),
  ],
  test: {
    include: ["test/unit/**/*.test.ts", "test/conformance/**/*.test.ts", "test/build-cache/**/*.test.ts"],
    // A loopback upstream registry for the proxy fill tests (test/unit/proxy.test.ts).
    globalSetup: ["test/unit/proxy-upstream.setup.mjs"],
    testTimeout: 60_000,
  },
});
