// argon2id through @node-rs/argon2: prebuilt binaries (no install script). The result is a PHC
// string. At the service's cost (19 MiB, several ms of a core each) the hashes run on threads
// of their own, one per core (workers/hash-worker.ts); a cheap cost, as the tests and the
// mail-path benchmarks use, hashes on libuv's pool with @node-rs/argon2's async API.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableParallelism, getPriority } from 'node:os';
import { hash, verify } from '@node-rs/argon2';
import { Piscina } from 'piscina';
import type { Log } from './logger.js';
import { argon2idOptions, type HashSettings, type HashTask } from './password-contract.js';
import { watchThreadLoading, type ThreadLoading } from './thread-loading.js';

export interface PasswordCost {
  readonly memoryKib: number;
  readonly iterations: number;
}

// Below this a hash is bound by the round trip through a pool, not by CPU: threads of its own
// would gain nothing, so it stays on libuv's pool.
const CPU_BOUND_MEMORY_KIB = 4096;

/**
 * How many nice steps below the API thread the hashes run: nice 5 for a service started at
 * the usual 0, still ahead of the mail threads (MAIL_WORKER_NICE, 10): a signup's hash goes
 * before a welcome email, and the API thread takes a core back from a hash whenever it has work.
 */
export const HASH_THREAD_NICE_STEPS = 5;

/**
 * Each thread is given its next hash while it computes the current one, so it goes straight
 * on to it. With one hash at a time, as on libuv's pool, a thread that finishes sleeps until
 * the API thread, woken in turn, hands it the next, and the kernel then often wakes it on the
 * core where the other hash runs while its own core idles: under `npm run bench -- hash`, 6 %
 * of both cores sat idle that way (docs/benchmarks.md, cut 13).
 */
const HASHES_PER_THREAD = 2;

const hashWorkerFile = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../workers/hash-worker.js');

export class PasswordHasher {
  readonly #cost: PasswordCost;
  readonly #threads: number;
  readonly #pool: Piscina<HashTask, string> | undefined;
  readonly #loading: ThreadLoading | undefined;
  // The hashes handed to the threads, in the order handed. The first #threads of them are
  // being computed, since startedAt; the rest wait (a thread takes its hashes in order).
  readonly #inFlight: { startedAt: number | undefined }[] = [];
  // How long one hash takes: a moving average of the last few.
  #averageHashMs: number | undefined;
  #closed = false;

  constructor(cost: PasswordCost, log: Log) {
    this.#cost = cost;
    this.#threads = cost.memoryKib < CPU_BOUND_MEMORY_KIB ? 0 : availableParallelism();
    if (this.#threads === 0) return;
    // Relative to this (the API) thread, so that a service started at nice 10 does not raise them.
    const settings: HashSettings = { nice: Math.min(19, getPriority() + HASH_THREAD_NICE_STEPS) };
    this.#pool = new Piscina<HashTask, string>({
      filename: hashWorkerFile,
      minThreads: this.#threads,
      maxThreads: this.#threads,
      idleTimeout: Number.POSITIVE_INFINITY,
      concurrentTasksPerWorker: HASHES_PER_THREAD,
      // First come, first hashed. By default a hash that finds both threads full on its turn
      // goes back to the end of the queue, and under sustained load some signups waited
      // twice as long as the rest (`npm run loadtest` at the default cost, 32 connections:
      // p99 475 ms against p50 163).
      stricterFIFO: true,
      // Nothing reads Piscina's run and wait times for this pool.
      recordTiming: false,
      // Needed by the load announcement (thread-loading.ts): an idle thread must not block its
      // event loop in Atomics.wait.
      atomics: 'disabled',
      workerData: settings,
    });
    // Without a listener, a thread that dies outside a task takes the process down.
    this.#pool.on('error', (err: Error) => log.error({ err }, 'password hashing thread failed; the pool replaces it'));
    this.#loading = watchThreadLoading(this.#pool);
  }

  /** How many threads hash at this cost: one per core, or none for a cheap cost (libuv's pool). */
  get threads(): number {
    return this.#threads;
  }

  async hash(password: string): Promise<string> {
    if (this.#closed) throw new Error('the password hasher is closed');
    const { memoryKib, iterations } = this.#cost;
    if (this.#pool === undefined) return hash(password, argon2idOptions(memoryKib, iterations));
    const hashing = { startedAt: this.#inFlight.length < this.#threads ? performance.now() : undefined };
    this.#inFlight.push(hashing);
    try {
      return await this.#pool.run({ password, memoryKib, iterations });
    } finally {
      const now = performance.now();
      this.#inFlight.splice(this.#inFlight.indexOf(hashing), 1);
      if (hashing.startedAt !== undefined) {
        const tookMs = now - hashing.startedAt;
        this.#averageHashMs = this.#averageHashMs === undefined ? tookMs : this.#averageHashMs + (tookMs - this.#averageHashMs) / 8;
      }
      // The thread this hash leaves goes straight on to its next one.
      for (const waiting of this.#inFlight.slice(0, this.#threads)) waiting.startedAt ??= now;
    }
  }

  /**
   * In how many ms the oldest hash being computed should be done (0 when it is late), or
   * undefined when none is (or none has finished yet to tell how long one takes). Cheap hashes
   * are not counted: they take no time worth waiting for.
   */
  nextHashDoneInMs(): number | undefined {
    const startedAt = this.#inFlight[0]?.startedAt;
    if (this.#averageHashMs === undefined || startedAt === undefined) return undefined;
    return Math.max(0, startedAt + this.#averageHashMs - performance.now());
  }

  /** Ends the threads (once they have loaded, or at `waitUntil`, a Date.now() value). Hashes still waiting, and any asked for later, are rejected. */
  async close(waitUntil: number): Promise<void> {
    this.#closed = true;
    await this.#loading?.destroyPool(waitUntil);
  }

  /** For tests: the pool, when there is one. */
  get internals(): { readonly pool: Piscina<HashTask, string> | undefined } {
    return { pool: this.#pool };
  }
}

export function verifyPassword(passwordHash: string, password: string): Promise<boolean> {
  return verify(passwordHash, password);
}
