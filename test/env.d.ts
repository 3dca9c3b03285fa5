// Types for the workerd test pool: the Worker's bindings and its default export.
declare namespace Cloudflare {
  interface Env extends import("../src/env").Env {}
  interface GlobalProps {
    mainModule: typeof import("../src/index");
  }
}
