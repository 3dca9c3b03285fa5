// The part of node:async_hooks workerd provides under the nodejs_als flag (no @types/node here).
declare module "node:async_hooks" {
  export class AsyncLocalStorage<T> {
    getStore(): T | undefined;
    run<R>(store: T, fn: () => R): R;
  }
}
