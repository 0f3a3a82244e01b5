// CPU time of local processes from /proc (Linux): the service's (every thread) and
// PostgreSQL's (the postmaster and its backends). Read at the start and the end of a
// measured window; the difference is what the window cost. Clock ticks are 1/100 s, so
// windows should last seconds.
import { readdirSync, readFileSync } from 'node:fs';
import pg from 'pg';

const TICK_MS = 10; // USER_HZ is 100 on Linux

interface Stat {
  readonly ppid: number;
  /** utime + stime: this process's own threads. */
  readonly ownMs: number;
  /** cutime + cstime: children it has waited for (a backend that exited). */
  readonly reapedMs: number;
}

/** A process's stat (`/proc/<pid>/stat`) or one thread's (`/proc/<pid>/task/<tid>/stat`): the same fields. */
function readStat(path: string): Stat | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return undefined; // gone
  }
  // The command name is in parentheses and may hold spaces: fields start after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const field = (n: number) => Number(fields[n - 3]);
  return { ppid: field(4), ownMs: (field(14) + field(15)) * TICK_MS, reapedMs: (field(16) + field(17)) * TICK_MS };
}

/** CPU ms used so far by `pid`, every thread of it. */
export function processCpuMs(pid: number): number {
  return readStat(`/proc/${pid}/stat`)?.ownMs ?? Number.NaN;
}

/** CPU ms used so far by the main thread of `pid` (the event loop), a part of processCpuMs. */
export function mainThreadCpuMs(pid: number): number {
  return readStat(`/proc/${pid}/task/${pid}/stat`)?.ownMs ?? Number.NaN;
}

/**
 * The main thread's time so far, in ms, from the scheduler (`/proc/<pid>/task/<pid>/schedstat`,
 * in ns): on a core, and runnable but waiting for one. The wait is what a busy machine adds to
 * the event loop's delay beyond the thread's own work. NaN where the kernel does not keep it.
 */
export function mainThreadScheduling(pid: number): { runMs: number; waitMs: number } {
  try {
    const [run, wait] = readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ').map(Number);
    return { runMs: run! / 1e6, waitMs: wait! / 1e6 };
  } catch {
    return { runMs: Number.NaN, waitMs: Number.NaN };
  }
}

/**
 * CPU ms used so far by a PostgreSQL server: the postmaster, its live children (backends,
 * checkpointer, WAL writer…) and the children it has already reaped.
 */
export function postgresCpuMs(postmasterPid: number): number {
  const postmaster = readStat(`/proc/${postmasterPid}/stat`);
  if (!postmaster) return Number.NaN;
  let total = postmaster.ownMs + postmaster.reapedMs;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = readStat(`/proc/${entry}/stat`);
    if (stat?.ppid === postmasterPid) total += stat.ownMs;
  }
  return total;
}

/**
 * The postmaster's pid for a server at `url` on this host: the parent of the backend that
 * answers us.
 */
export async function postmasterPidOf(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
    const backend = readStat(`/proc/${rows[0]!.pid}/stat`);
    if (!backend) throw new Error(`PostgreSQL at ${new URL(url).host} does not run on this host: its CPU cannot be read from /proc`);
    return backend.ppid;
  } finally {
    await client.end();
  }
}

/**
 * CPU ms used so far by each kind of thread of `pid`, by the names Node gives them (24:
 * `WorkerThread` for worker threads, `libuv-worker` for libuv's pool, `V8Worker` for V8's
 * compiler and GC helpers); the main thread is `main`. Node 22 names only libuv's pool and
 * Node 20 none: the others are then `node`.
 */
export function threadCpuMsByName(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return byName; // gone
  }
  for (const tid of tids) {
    const stat = readStat(`/proc/${pid}/task/${tid}/stat`);
    if (!stat) continue;
    let name = 'main';
    if (tid !== String(pid)) {
      try {
        name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      } catch {
        continue; // exited meanwhile
      }
    }
    byName.set(name, (byName.get(name) ?? 0) + stat.ownMs);
  }
  return byName;
}

/** A window's CPU, service and PostgreSQL, in ms. */
export interface CpuWindow {
  /** The service's CPU (of which `mainThreadMs` on its event loop) and PostgreSQL's. */
  stop(): { serviceMs: number; mainThreadMs: number; postgresMs: number };
}

export function startCpuWindow(servicePid: number, postmasterPid: number): CpuWindow {
  const service = processCpuMs(servicePid);
  const main = mainThreadCpuMs(servicePid);
  const postgres = postgresCpuMs(postmasterPid);
  return {
    stop: () => ({
      serviceMs: processCpuMs(servicePid) - service,
      mainThreadMs: mainThreadCpuMs(servicePid) - main,
      postgresMs: postgresCpuMs(postmasterPid) - postgres,
    }),
  };
}
