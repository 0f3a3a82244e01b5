// PostgreSQL refuses to run as root. As root, the embedded server runs as the `postgres`
// user, and everything it opens (binaries, data directory) must be reachable by that user,
// whatever the modes of the folders above the checkout (a clone in root's 0700 home, or in
// a `mktemp -d` folder).
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, statSync } from 'node:fs';
import path from 'node:path';

export interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

/** The `postgres` user when we are root, created if needed; undefined otherwise. */
export function postgresUserIfRoot(): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const idOf = (flag: string) => Number.parseInt(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }), 10);
  try {
    return { uid: idOf('-u'), gid: idOf('-g') };
  } catch {
    execFileSync('groupadd', ['--system', 'postgres']);
    execFileSync('useradd', ['--system', '-g', 'postgres', 'postgres']);
    return { uid: idOf('-u'), gid: idOf('-g') };
  }
}

/**
 * The outermost existing folder above `target` that `user` cannot enter (no search
 * permission), or undefined when every one of them lets it through. Mode bits only (owner,
 * primary group, others): supplementary groups and ACLs are not read. A 0700 home or
 * `mktemp -d` folder, the cases that matter, are plain mode bits.
 */
export function firstClosedFolder(target: string, user: RunAs): string | undefined {
  const closed: string[] = [];
  for (let dir = path.dirname(path.resolve(target)); ; dir = path.dirname(dir)) {
    if (existsSync(dir)) {
      const { mode, uid, gid } = statSync(dir);
      const canEnter = uid === user.uid ? mode & 0o100 : gid === user.gid ? mode & 0o010 : mode & 0o001;
      if (!canEnter) closed.push(dir);
    }
    if (dir === path.dirname(dir)) break;
  }
  // The outermost closed folder is the one to name: opening an inner one would not help.
  return closed.at(-1);
}

/**
 * A folder root created for its own use: owned by root and writable by nobody else, so no
 * other local user can have planted or can swap what is inside it. Throws naming the folder.
 */
export function assertRootOwned(dir: string): void {
  const stat = lstatSync(dir);
  if (!stat.isDirectory() || stat.uid !== 0 || (stat.mode & 0o022) !== 0) {
    throw new Error(`${dir} must be a directory owned by root and writable only by root (it is mode ${(stat.mode & 0o777).toString(8)}, owner ${stat.uid}); remove it and start again`);
  }
}
