// Group commit for signups. Each signup is one statement (signups.ts), and a statement's fixed
// costs (a round trip, executor start-up, a commit that waits for the WAL to reach disk) are
// most of what the database spends on it. So signups that arrive while every writing
// connection is busy wait for the next free one and go out together, in one statement and one
// commit. At low load a signup finds a connection free and is written at once, alone: nothing
// waits to fill a batch. Under load the batches grow with the queue.
//
// One exception: a signup that would go alone while the next one is due within a few ms (its
// password hash nearly done) waits for it, and the two share a statement. At the OWASP hash
// cost the cores are full of hashing and each signup otherwise wakes PostgreSQL and the API
// thread on its own, on caches the hashes have just flushed (docs/benchmarks.md, cut 12).
import type { Queryable } from './pool.js';
import { EmailTakenError, insertSignups, type NewSignup, type SignupRecord } from './signups.js';

interface Queued {
  readonly signup: NewSignup;
  resolve(record: SignupRecord): void;
  reject(error: unknown): void;
}

export interface SignupWriterOptions {
  /** Statements in progress at once: the connections signups may hold (DATABASE_POOL_MAX). */
  readonly maxConcurrentWrites: number;
  /** Signups per statement at most. */
  readonly maxSignupsPerWrite: number;
  /** In how many ms the next signup should be ready to write, if one is on its way. */
  readonly nextSignupDueInMs?: () => number | undefined;
  /** How long a signup that would go alone may wait for the next one, when it is due by then. */
  readonly maxHoldMs?: number;
}

export class SignupWriter {
  #queue: Queued[] = [];
  #writing = 0;
  /** The timer of a signup waiting for a companion, which writes it if none comes. */
  #hold: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly options: SignupWriterOptions,
  ) {}

  /**
   * Writes one signup, alone or with others that wait at the same time. Resolves with its
   * record; rejects with EmailTakenError when the address is taken (by an existing user, or
   * by an earlier signup of the same statement), and with the statement's error when the
   * statement failed, which then wrote none of the signups it carried.
   */
  write(signup: NewSignup): Promise<SignupRecord> {
    return new Promise<SignupRecord>((resolve, reject) => {
      this.#queue.push({ signup, resolve, reject });
      // A companion for a waiting signup (or a signup behind busy connections) goes now.
      if (this.#hold === undefined && this.#companionDueSoon()) this.#hold = setTimeout(() => this.#startWrites(), this.options.maxHoldMs);
      else this.#startWrites();
    });
  }

  /** Whether this signup, alone in the queue with a connection free, should wait for the next. */
  #companionDueSoon(): boolean {
    if (this.#queue.length !== 1 || this.#writing >= this.options.maxConcurrentWrites || !this.options.maxHoldMs) return false;
    const dueInMs = this.options.nextSignupDueInMs?.();
    return dueInMs !== undefined && dueInMs <= this.options.maxHoldMs;
  }

  #startWrites(): void {
    clearTimeout(this.#hold);
    this.#hold = undefined;
    while (this.#writing < this.options.maxConcurrentWrites && this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.options.maxSignupsPerWrite);
      this.#writing += 1;
      void insertSignups(
        this.db,
        batch.map((queued) => queued.signup),
      )
        .then(
          (outcomes) =>
            outcomes.forEach((outcome, index) => {
              const queued = batch[index]!;
              if (outcome instanceof EmailTakenError) queued.reject(outcome);
              else queued.resolve(outcome);
            }),
          (error: unknown) => {
            for (const queued of batch) queued.reject(error);
          },
        )
        .finally(() => {
          this.#writing -= 1;
          this.#startWrites();
        });
    }
  }
}
