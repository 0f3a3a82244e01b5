// What a pool thread sets on itself as it starts, on Linux, where both are per thread.
import { writeFileSync } from 'node:fs';
import { setPriority } from 'node:os';

/**
 * Sets this thread's nice value. On Linux setpriority applies to the calling thread only;
 * elsewhere it would renice the whole process, so it is skipped there.
 */
export function setThisThreadNice(nice: number): void {
  if (process.platform !== 'linux') return;
  try {
    setPriority(nice);
  } catch {
    // Not permitted in this sandbox: run at normal priority.
  }
}

/** Names this thread in /proc, top -H and ps -L (Node 24 calls every worker thread WorkerThread, older releases node). */
export function nameThisThread(name: string): void {
  if (process.platform !== 'linux') return;
  try {
    writeFileSync('/proc/thread-self/comm', name);
  } catch {
    // No /proc: the name stays Node's.
  }
}
