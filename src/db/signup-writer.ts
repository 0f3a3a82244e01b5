// Group commit for signups. Each signup is one statement (signups.ts), and a statement's fixed
// costs (a round trip, executor start-up, a commit that waits for the WAL to reach disk) are
// most of what the database spends on it. So signups that arrive while every writing
// connection is busy wait for the next free one and go out together, in one statement and one
// commit. At low load a signup finds a connection free and is written at once, alone: nothing
// waits to fill a batch. Under load the batches grow with the queue.
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
}

export class SignupWriter {
  #queue: Queued[] = [];
  #writing = 0;

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
      this.#startWrites();
    });
  }

  #startWrites(): void {
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
