// argon2id through @node-rs/argon2: prebuilt binaries (no install script), and the hash
// runs on libuv's thread pool, off the event loop. The result is a PHC string.
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, getPriority, setPriority } from 'node:os';
import { hash, verify } from '@node-rs/argon2';
import pLimit from 'p-limit';

export interface PasswordCost {
  readonly memoryKib: number;
  readonly iterations: number;
}

// 2 is Algorithm.Argon2id; the package's enum is a `const enum`, which isolated modules cannot import.
const ARGON2ID = 2;

// libuv's pool has 4 threads. Four real-cost argon2 hashes at once (19 MiB, tens of ms of
// CPU each) on a 2-core machine leave the API thread a third of a core and its event loop
// stalls; one hash per core hashes just as fast and leaves it room. One more than cores was
// tried (a core idles while the API thread hands the next hash over): with three 19 MiB
// hashes sharing two cores' caches each hash took about 8 % more CPU, and `npm run bench --
// hash` read lower in four of six pairs (docs/benchmarks.md, cut 8). A cheap hash (the test
// and benchmark costs) is bound by the round trip through the pool, not by CPU: limiting it
// would only cap signups/s, so it is not limited.
const CPU_BOUND_MEMORY_KIB = 4096;
const hashSlots = pLimit(availableParallelism());

// When each real-cost hash in progress started, in the order they started (a Set iterates in
// insertion order), and how long one takes (a moving average of the last few): the signup
// writer asks when the next signup will be ready (nextHashDoneInMs).
const hashesInProgress = new Set<{ readonly startedAt: number }>();
let averageHashMs: number | undefined;

export function hashPassword(password: string, cost: PasswordCost): Promise<string> {
  const run = () => hash(password, { algorithm: ARGON2ID, memoryCost: cost.memoryKib, timeCost: cost.iterations, parallelism: 1 });
  if (cost.memoryKib < CPU_BOUND_MEMORY_KIB) return run();
  return hashSlots(async () => {
    const hashing = { startedAt: performance.now() };
    hashesInProgress.add(hashing);
    try {
      return await run();
    } finally {
      hashesInProgress.delete(hashing);
      const tookMs = performance.now() - hashing.startedAt;
      averageHashMs = averageHashMs === undefined ? tookMs : averageHashMs + (tookMs - averageHashMs) / 8;
    }
  });
}

/**
 * In how many ms the real-cost hash in progress that started first should be done (0 when
 * it is late), or undefined when none is in progress (or none has finished yet to tell how
 * long one takes). Cheap hashes are not counted: they take no time worth waiting for.
 */
export function nextHashDoneInMs(): number | undefined {
  const first = hashesInProgress.values().next();
  if (averageHashMs === undefined || first.done) return undefined;
  return Math.max(0, first.value.startedAt + averageHashMs - performance.now());
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return verify(passwordHash, password);
}

/**
 * How many nice steps below the API thread the hashes run: nice 5 for a service started at
 * the usual 0, still ahead of the mail threads (MAIL_WORKER_NICE, 10): a signup's hash goes
 * before a welcome email.
 */
export const HASH_THREAD_NICE_STEPS = 5;

/**
 * The hashes run on libuv's thread pool, the event loop on the API thread. With fewer cores
 * than busy threads, a pool thread woken for the next signup's hash takes a core from the event
 * loop for a whole time slice, and every request in flight waits. A lower priority (nice) for
 * the pool threads lets the event loop take the core back whenever it has work, and costs the
 * hashes nothing while a core is free. Linux only (the nice value is per thread there), and
 * only where Node names its pool threads (Node 22 and later): elsewhere nothing changes.
 * Returns the nice value given and how many threads got it.
 */
export async function lowerHashThreadPriority(): Promise<{ nice: number; threads: number }> {
  // Relative to this (the API) thread, so that a service started at nice 10 does not raise them.
  const nice = Math.min(19, getPriority() + HASH_THREAD_NICE_STEPS);
  if (process.platform !== 'linux') return { nice, threads: 0 };
  // The pool starts with the first task given to it: this one starts it now.
  await hash('', { algorithm: ARGON2ID, memoryCost: 8, timeCost: 1, parallelism: 1 });
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return { nice, threads: 0 }; // no /proc (an unusual container): priorities stay as they are
  }
  let lowered = 0;
  for (const tid of tids) {
    try {
      if (readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== 'libuv-worker') continue;
      setPriority(Number(tid), nice);
      lowered++;
    } catch {
      // A thread that ended meanwhile, or a sandbox that forbids it: it keeps its priority.
    }
  }
  return { nice, threads: lowered };
}
