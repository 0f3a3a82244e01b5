// The API thread's helpers run below it. On a machine with fewer cores than busy threads, a
// helper woken for work takes a core from the event loop for a whole time slice, and every
// request in flight waits for it; a lower priority (nice) lets the event loop take the core
// back whenever it has work, and costs the helper nothing while a core is free. Linux only
// (the nice value is per thread there), and only where Node names the threads (Node 22 and
// later): elsewhere nothing changes. The mail threads set their own (MAIL_WORKER_NICE).
import { readdirSync, readFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { startHashThreads } from './passwords.js';

/**
 * How many nice steps below the API thread the helpers run: nice 5 for a service started at
 * the usual 0, still ahead of the mail threads (MAIL_WORKER_NICE, 10): a signup's hash goes
 * before a welcome email.
 */
export const HELPER_NICE_STEPS = 5;

/**
 * The helpers, by the names Node gives their threads: libuv's pool computes the password
 * hashes; V8's platform threads compile hot functions with the optimizing compiler, for the
 * API thread and the mail threads alike (with --single-threaded-gc they collect no garbage).
 * A fresh service compiles most in its first seconds under load, on the cores the API thread
 * needs then (docs/benchmarks.md, cut 10).
 */
export const HELPER_THREADS = ['libuv-worker', 'V8Worker'] as const;

/**
 * Lowers the helper threads of this process. Call it once at boot: it starts libuv's pool
 * (which starts with its first task) so that its threads exist. Returns the nice value given
 * and how many threads of each kind got it.
 */
export async function lowerHelperThreadPriority(): Promise<{ nice: number; threads: Record<string, number> }> {
  // Relative to this (the API) thread, so that a service started at nice 10 does not raise them.
  const nice = Math.min(19, getPriority() + HELPER_NICE_STEPS);
  const threads: Record<string, number> = Object.fromEntries(HELPER_THREADS.map((name) => [name, 0]));
  if (process.platform !== 'linux') return { nice, threads };
  await startHashThreads();
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return { nice, threads }; // no /proc (an unusual container): priorities stay as they are
  }
  for (const tid of tids) {
    try {
      const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      if (!(name in threads)) continue;
      setPriority(Number(tid), nice);
      threads[name]!++;
    } catch {
      // A thread that ended meanwhile, or a sandbox that forbids it: it keeps its priority.
    }
  }
  return { nice, threads };
}
