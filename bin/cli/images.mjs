// Image commands: copy, push, pull (and cache). Owned by the CLI images work.
/** @param {import("commander").Command} program */
export function register(program) {}
