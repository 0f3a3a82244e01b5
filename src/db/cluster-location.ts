// Where the embedded PostgreSQL keeps its cluster: DATA_DIR/pg, unless we are root and the
// `postgres` user cannot enter a folder above DATA_DIR (a clone in root's 0700 home, or in a
// `mktemp -d` folder). Then the cluster lives under /var/lib/mailoffload/clusters, and
// DATA_DIR/pg is a symbolic link to it, so `ls -l DATA_DIR` shows where it went. The rest of
// DATA_DIR (the password, the log, the lock, the mailbox) stays put: only root opens those.
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readlinkSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import type { Log } from '../logger.js';
import { assertRootOwned, firstClosedFolder, type RunAs } from './postgres-user.js';

export const CLUSTERS_ROOT = '/var/lib/mailoffload/clusters';

export interface ClusterLocation {
  /** The cluster's real path, the one PostgreSQL is given (-D). */
  readonly pgDir: string;
  /**
   * pgDir holds a cluster left by a DATA_DIR deleted since: its link and its password went
   * with it, so it can only be stopped and removed before a new one is made.
   */
  readonly stale: boolean;
}

/** The cluster's folder for `dataDir` (which exists). Throws naming a folder that blocks the way. */
export function locateCluster(dataDir: string, runAs: RunAs | undefined, log: Log): ClusterLocation {
  const link = path.join(dataDir, 'pg');
  // Not root: the user runs PostgreSQL itself and can reach its own folders.
  if (runAs === undefined) return { pgDir: link, stale: false };

  const existing = lstatOrUndefined(link);
  if (existing?.isSymbolicLink()) {
    // A cluster placed elsewhere earlier (by us or by hand); an absent target is made anew.
    const pgDir = path.resolve(dataDir, readlinkSync(link));
    assertReachable(pgDir, runAs, `the cluster that ${link} points to`);
    return { pgDir, stale: false };
  }
  if (existing !== undefined) {
    // A cluster in place from an earlier start, now behind a closed folder (the checkout
    // was moved): moving a database silently is not ours to do.
    assertReachable(link, runAs, 'the cluster');
    return { pgDir: link, stale: false };
  }
  const closed = firstClosedFolder(link, runAs);
  if (closed === undefined) return { pgDir: link, stale: false };

  mkdirSync(CLUSTERS_ROOT, { recursive: true, mode: 0o755 });
  assertRootOwned(path.dirname(CLUSTERS_ROOT));
  assertRootOwned(CLUSTERS_ROOT);
  // One folder per DATA_DIR, so the same DATA_DIR finds its cluster again after a restart.
  const key = createHash('sha256').update(realpathSync(dataDir)).digest('hex').slice(0, 16);
  const pgDir = path.join(CLUSTERS_ROOT, key);
  const stale = existsSync(pgDir);
  symlinkSync(pgDir, link);
  log.info({ cluster: pgDir, link, closedFolder: closed }, 'embedded PostgreSQL cluster placed outside DATA_DIR, where the postgres user can enter');
  return { pgDir, stale };
}

/** Removes a stale cluster (see ClusterLocation.stale); its server must be stopped first. */
export function removeStaleCluster(pgDir: string, log: Log): void {
  log.warn({ cluster: pgDir }, 'removing an embedded PostgreSQL cluster whose DATA_DIR was deleted');
  rmSync(pgDir, { recursive: true, force: true });
}

function assertReachable(pgDir: string, runAs: RunAs, what: string): void {
  const closed = firstClosedFolder(pgDir, runAs);
  if (closed === undefined) return;
  throw new Error(
    `embedded PostgreSQL runs as the "postgres" user, which cannot enter ${closed}, above ${what} (${pgDir}); ` +
      `let it in (chmod o+x ${closed}), delete ${pgDir} to start with an empty database, or set DATABASE_URL`,
  );
}

function lstatOrUndefined(file: string) {
  try {
    return lstatSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}
