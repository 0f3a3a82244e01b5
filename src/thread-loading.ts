// Worker threads that are still loading must not be terminated: on Node 20 that aborts the
// whole process (FATAL ERROR: v8::Module::IsGraphAsync must be used on an instantiated module,
// then SIGABRT) when the termination lands while the thread's ES modules are being
// instantiated. A SIGTERM within a second of boot can land there, and Piscina marks its first
// threads ready before they have loaded anything. So each pool thread (mail or password
// hashing) says when its module has loaded, and the pool is destroyed once all have (or at
// the shutdown deadline).
import { parentPort, threadId } from 'node:worker_threads';
import type { Piscina } from 'piscina';
import { settleBy } from './deadline.js';

/** The key of the message a pool thread posts once its module has loaded; the value is its threadId. */
const LOADED = 'mailoffload:threadLoaded';

/**
 * Run by a pool thread as the last statement of its module. The message leaves on the next
 * turn of the thread's event loop, not now: Piscina loads the module with require(), and
 * Node 20 instantiates one more module (the facade require() returns) after the last
 * statement has run; a termination during that aborts the process too. (So the pool must
 * run with `atomics: 'disabled'`, as the mail pool does: otherwise an idle thread blocks its
 * event loop in Atomics.wait and the message never leaves.)
 */
export function announceThreadLoaded(): void {
  setImmediate(() => parentPort?.postMessage({ [LOADED]: threadId }));
}

export interface ThreadLoading {
  /** Resolves once every thread the pool has at that moment has loaded its module. */
  allLoaded(): Promise<void>;
  /** Destroys the pool once every thread has loaded, or at `waitUntil` (a Date.now() value). */
  destroyPool(waitUntil: number): Promise<void>;
}

/** Watches `pool` from its creation (a thread may announce itself before anyone asks). */
export function watchThreadLoading(pool: Piscina): ThreadLoading {
  const loaded = new Set<number>();
  let waiters: Array<() => void> = [];
  // A thread that dies is dropped from pool.threads: its replacement is then the one to wait for.
  const everyThreadLoaded = () => pool.threads.every((thread) => loaded.has(thread.threadId));
  const wakeIfLoaded = () => {
    if (waiters.length === 0 || !everyThreadLoaded()) return;
    for (const wake of waiters) wake();
    waiters = [];
  };
  pool.on('message', (message: unknown) => {
    if (typeof message !== 'object' || message === null || !(LOADED in message)) return;
    loaded.add((message as Record<typeof LOADED, number>)[LOADED]);
    wakeIfLoaded();
  });
  // Piscina emits this just before it drops the thread from pool.threads.
  pool.on('workerDestroy', () => queueMicrotask(wakeIfLoaded));
  const allLoaded = () =>
    everyThreadLoaded()
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          waiters.push(resolve);
        });
  return {
    allLoaded,
    async destroyPool(waitUntil) {
      await settleBy(allLoaded(), waitUntil);
      await pool.destroy();
    },
  };
}
