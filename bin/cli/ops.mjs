// Operator commands: login, status, repo, tag, user, robot, policy, gc, audit, snapshot, restore.
/** @param {import("commander").Command} program */
export function register(program) {}
