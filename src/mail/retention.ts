// Keeps the outbox and the tokens table bounded over months of traffic: deletes `sent` rows
// older than MAIL_RETAIN_SENT_DAYS and expired tokens, shortly after boot and then every hour.
// `dead` rows stay until an operator requeues or purges them (npm run outbox).
//
// Small batches, one statement each (its own short transaction): a big DELETE would hold many
// row locks, bloat one transaction's WAL and stall the signups writing to the same tables.
// One instance at a time: a session advisory lock on a dedicated connection; the others skip
// their turn. If the holder dies, its connection ends and the lock goes with it.
import type pg from 'pg';
import { deleteExpiredTokens, deleteSentBefore, tryLockRetention, unlockRetention } from '../db/retention.js';
import type { Log } from '../logger.js';

export interface RetentionOptions {
  readonly retainSentDays: number;
  /** Between passes; default one hour. */
  readonly intervalMs?: number;
  /** From start() to the first pass; default one minute, so a boot is not slowed by it. */
  readonly firstRunDelayMs?: number;
  /** Rows per DELETE; default 1000. */
  readonly batchSize?: number;
}

export interface RetentionPass {
  /** False when another instance held the lock (or the job was stopping). */
  readonly ran: boolean;
  readonly sentDeleted: number;
  readonly tokensDeleted: number;
}

const HOUR_MS = 3_600_000;

export class Retention {
  readonly #intervalMs: number;
  readonly #firstRunDelayMs: number;
  readonly #batchSize: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;
  #stopping = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly log: Log,
    private readonly options: RetentionOptions,
  ) {
    this.#intervalMs = options.intervalMs ?? HOUR_MS;
    this.#firstRunDelayMs = options.firstRunDelayMs ?? 60_000;
    this.#batchSize = options.batchSize ?? 1000;
  }

  start(): void {
    if (this.#timer !== undefined || this.#stopping) return;
    this.#schedule(this.#firstRunDelayMs);
  }

  /** No new pass starts; a running one stops after its current batch, and stop() waits for that. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }

  /** One pass, if no other instance is doing one. Errors reach the caller. */
  async runOnce(): Promise<RetentionPass> {
    const skipped = { ran: false, sentDeleted: 0, tokensDeleted: 0 };
    if (this.#stopping) return skipped;
    // A dedicated connection: a session lock belongs to the connection that took it.
    const client = await this.pool.connect();
    let broken: Error | undefined;
    try {
      if (!(await tryLockRetention(client))) return skipped;
      try {
        const sentDeleted = await this.#drain((limit) => deleteSentBefore(client, this.options.retainSentDays, limit));
        const tokensDeleted = await this.#drain((limit) => deleteExpiredTokens(client, limit));
        return { ran: true, sentDeleted, tokensDeleted };
      } finally {
        // A lock that could not be released must not stay on a pooled connection (every other
        // instance would skip forever): the connection is destroyed below instead of reused.
        await unlockRetention(client).catch((error: Error) => (broken = error));
      }
    } finally {
      client.release(broken);
    }
  }

  async #drain(deleteBatch: (limit: number) => Promise<number>): Promise<number> {
    let total = 0;
    while (!this.#stopping) {
      const deleted = await deleteBatch(this.#batchSize);
      total += deleted;
      if (deleted < this.#batchSize) break;
    }
    return total;
  }

  #schedule(delayMs: number): void {
    this.#timer = setTimeout(() => {
      this.#running = this.#pass().finally(() => {
        this.#running = undefined;
        if (!this.#stopping) this.#schedule(this.#intervalMs);
      });
    }, delayMs);
    // Housekeeping never keeps the process alive on its own.
    this.#timer.unref();
  }

  async #pass(): Promise<void> {
    const started = performance.now();
    try {
      const pass = await this.runOnce();
      const fields = { ...pass, retainSentDays: this.options.retainSentDays, durationMs: Math.round(performance.now() - started) };
      if (pass.sentDeleted + pass.tokensDeleted > 0) this.log.info(fields, 'retention: old sent emails and expired tokens deleted');
      else this.log.debug(fields, pass.ran ? 'retention: nothing to delete' : 'retention: another instance is on it');
    } catch (err) {
      // Nothing is lost by a missed pass: the next one deletes the same rows.
      this.log.warn({ err }, 'retention pass failed; trying again at the next interval');
    }
  }
}
