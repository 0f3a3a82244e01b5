// Databases and folders for a run: a fresh database per test file or benchmark run (so runs
// never see each other's rows), a PostgreSQL server of their own when none is given, and
// temporary folders the `postgres` user can enter. Each is removed at the end of its scope.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../src/db/embedded-postgres.js';
import type { Log } from '../../src/logger.js';
import { closeAtEnd, once, track, type Scope } from './scope.js';

/**
 * A folder under the system's temporary folder, removed at the end of `scope`. mkdtemp makes
 * it 0700; the default 0755 lets the embedded PostgreSQL, which runs as the `postgres` user
 * when we are root, enter it.
 */
export function tempDir(scope: Scope, prefix: string, mode = 0o755): string {
  const dir = mkdtempSync(path.join(tmpdir(), `mailoffload-${prefix}-`));
  chmodSync(dir, mode);
  closeAtEnd(scope, () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * An embedded PostgreSQL in a temporary folder, stopped (and the folder removed) at the end of
 * `scope`. As root, with a TMPDIR the `postgres` user cannot reach, the cluster is placed
 * outside the folder (DATA_DIR/pg is then a link to it): it is removed too.
 */
export async function startTempPostgres(scope: Scope, log: Log, prefix: string): Promise<EmbeddedPostgres> {
  const dataDir = tempDir(scope, prefix);
  const server = await startEmbeddedPostgres(dataDir, log);
  const cluster = realpathSync(path.join(dataDir, 'pg'));
  const stop = once(async () => {
    await server.stop();
    // Inside the folder, the folder's own removal would do; outside, only this does.
    rmSync(cluster, { recursive: true, force: true });
    untrack();
  });
  const untrack = track({ kind: 'embedded PostgreSQL', label: dataDir, forceClose: stop });
  closeAtEnd(scope, stop);
  return server;
}

/** The server at `url` if one is given, else an embedded one of our own for this scope. */
export async function databaseServer(scope: Scope, url: string | undefined, log: Log, prefix: string): Promise<string> {
  return url ?? (await startTempPostgres(scope, log, `${prefix}-pg`)).url;
}

export interface Database {
  readonly url: string;
  /** A small pool on the new database, for the checks a test makes. */
  readonly pool: pg.Pool;
}

async function admin(serverUrl: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A new, empty database on the server of `serverUrl`, dropped at the end of `scope`. */
export async function createDatabase(scope: Scope, serverUrl: string, prefix: string): Promise<Database> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin(serverUrl, `CREATE DATABASE ${name}`);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 4 });
  const end = once(async () => {
    await pool.end();
    untrack();
  });
  const untrack = track({ kind: 'pg pool', label: `database ${name}`, forceClose: end });
  closeAtEnd(scope, async () => {
    await end();
    await admin(serverUrl, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
  return { url: url.toString(), pool };
}

/** A new database on the test server (TEST_DATABASE_URL, set by `npm test`). */
export function createTestDatabase(scope: Scope): Promise<Database> {
  const serverUrl = process.env.TEST_DATABASE_URL;
  assert.ok(serverUrl, 'TEST_DATABASE_URL is not set: run the tests with `npm test`');
  return createDatabase(scope, serverUrl, 'test');
}
