// The dispatcher hands leased outbox rows to the worker pool and writes their results back.
// It owns the in-memory bound: at most `maxInFlight` jobs are held (batched, queued in the
// pool or sending) at any time. A signup that finds no room leaves its email in the outbox
// for a sweeper instead: memory stays bounded under any burst and nothing is lost.
import type pg from 'pg';
import type { Piscina } from 'piscina';
import type { Log } from '../logger.js';
import { isDatabaseUnavailable } from '../db/pool.js';
import type { TaskGroup } from '../task-group.js';
import type { FailedResult, MailResult, MailTask, WelcomeJob } from './contract.js';
import type { Metrics } from '../metrics.js';
import { markFailed, markSent, release, type RetryPolicy } from '../db/outbox.js';
import { WriteCoalescer } from './coalescer.js';
import { welcomeMessageId } from './message-id.js';

export interface DispatcherOptions {
  readonly pool: Piscina<MailTask, MailResult[]>;
  readonly db: pg.Pool;
  readonly group: TaskGroup;
  readonly log: Log;
  readonly metrics: Metrics;
  /** This instance's lease owner id. */
  readonly owner: string;
  readonly maxInFlight: number;
  readonly batchSize: number;
  readonly messageIdDomain: string;
  readonly retry: RetryPolicy;
}

const RESULT_WRITE_ATTEMPTS = 12;

export class Dispatcher {
  #inFlight = 0;
  #batch: WelcomeJob[] = [];
  #flushScheduled = false;
  /** Set at the shutdown deadline: the rows were released, results no longer matter. */
  #abandoned = false;
  /**
   * Marks rows sent, one UPDATE at a time: the results of every batch that settles while one
   * is under way go out together in the next, so under load one statement and one commit
   * carry many batches.
   */
  readonly #sentWriter = new WriteCoalescer<number>((ids) =>
    this.#withRetry(() => markSent(this.options.db, ids.map((outboxId) => ({ outboxId, messageId: welcomeMessageId(outboxId, this.options.messageIdDomain) })))),
  );
  /** Who waits for room (the sweeper, with a backlog): called once `places` are free. */
  #roomWaiters: { places: number; wake: () => void }[] = [];

  constructor(private readonly options: DispatcherOptions) {}

  /** Jobs reserved or running, not yet settled. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** The most jobs held at once (MAIL_MAX_IN_FLIGHT). */
  get capacity(): number {
    return this.options.maxInFlight;
  }

  /** How many more jobs fit right now. */
  get room(): number {
    return Math.max(0, this.options.maxInFlight - this.#inFlight);
  }

  /** Takes `n` places, if there are. Every reservation ends in submit() or cancel(). */
  tryReserve(n = 1): boolean {
    if (this.#inFlight + n > this.options.maxInFlight) return false;
    this.#inFlight += n;
    return true;
  }

  cancel(n = 1): void {
    this.#settled(n);
  }

  /**
   * Calls `wake` once, as soon as `places` are free (at most maxInFlight). Returns a function
   * that cancels the wait. A sweeper with a backlog uses it to claim more as soon as the pool
   * has room, instead of idling until its next tick.
   */
  whenRoom(places: number, wake: () => void): () => void {
    const waiter = { places: Math.min(places, this.options.maxInFlight), wake };
    this.#roomWaiters.push(waiter);
    this.#notifyRoom();
    return () => {
      this.#roomWaiters = this.#roomWaiters.filter((w) => w !== waiter);
    };
  }

  #settled(n: number): void {
    this.#inFlight -= n;
    if (this.#roomWaiters.length > 0) this.#notifyRoom();
  }

  #notifyRoom(): void {
    const ready = this.#roomWaiters.filter((w) => w.places <= this.room);
    if (ready.length === 0) return;
    this.#roomWaiters = this.#roomWaiters.filter((w) => w.places > this.room);
    for (const waiter of ready) waiter.wake();
  }

  /**
   * Queues a reserved job. Jobs submitted in the same turn of the event loop go to the pool as
   * one task: under load the per-task cost (a structured clone, a message port round trip) is
   * paid once per batch, and the results are written back in one UPDATE.
   */
  submit(job: WelcomeJob): void {
    this.#batch.push(job);
    if (this.#batch.length >= this.options.batchSize) this.flush();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Sends the partial batch now (shutdown calls this before waiting for the group). */
  flush(): void {
    this.#flushScheduled = false;
    const jobs = this.#batch;
    if (jobs.length === 0) return;
    this.#batch = [];
    const work = this.#send(jobs).finally(() => this.#settled(jobs.length));
    try {
      this.options.group.track(work, { component: 'dispatcher', outboxIds: jobs.map((job) => job.outboxId) }, jobs.length);
    } catch (error) {
      // The group is closed: shutdown is past the point of waiting. The rows are leased to us;
      // the deadline release hands them back, or their lease expires.
      this.options.log.warn({ err: error, count: jobs.length }, 'batch dispatched after the task group closed');
      work.catch(() => undefined);
    }
  }

  /** The shutdown deadline passed and our leases were released: stop writing results. */
  abandon(): void {
    this.#abandoned = true;
  }

  async #send(jobs: WelcomeJob[]): Promise<void> {
    let results: MailResult[];
    const started = performance.now();
    try {
      results = await this.options.pool.run(jobs);
    } catch (error) {
      // The worker thread died or the pool was destroyed: nothing says whether the messages
      // left, so each is retried (at-least-once; the Message-ID makes a resend recognisable).
      const message = error instanceof Error ? error.message : String(error);
      this.options.log.warn({ err: error, count: jobs.length }, 'mail worker task failed; its emails will be retried');
      results = jobs.map(
        (job): FailedResult => ({ outboxId: job.outboxId, status: 'failed', code: 'EWORKER', responseCode: null, retryable: true, message }),
      );
    }
    this.options.metrics.observeBatch(results, (performance.now() - started) / 1000);
    if (this.#abandoned) return;
    await this.#record(results);
  }

  async #record(results: MailResult[]): Promise<void> {
    const sent: number[] = [];
    const failed: FailedResult[] = [];
    for (const result of results) {
      if (result.status === 'sent') sent.push(result.outboxId);
      else failed.push(result);
    }
    await this.#sentWriter.add(sent);
    if (failed.length === 0) return;
    const outcomes = await this.#withRetry(() =>
      markFailed(
        this.options.db,
        failed.map((f) => ({ outboxId: f.outboxId, retryable: f.retryable, error: `${f.code}${f.responseCode ? ` ${f.responseCode}` : ''}: ${f.message}` })),
        this.options.retry,
      ),
    );
    const byId = new Map(failed.map((f) => [f.outboxId, f]));
    for (const outcome of outcomes) {
      const failure = byId.get(outcome.outboxId);
      const fields = { outboxId: outcome.outboxId, attempt: outcome.attempts, code: failure?.code, responseCode: failure?.responseCode };
      this.options.metrics.observeOutcome(outcome.status, failure?.code);
      if (outcome.status === 'dead') this.options.log.error(fields, 'email gave up: marked dead');
      else this.options.log.warn(fields, 'email failed; retry scheduled');
    }
  }

  /**
   * A result not written means a resend later (the lease expires), not a loss; still, while
   * the database is briefly away, keep trying for about half a minute before giving up.
   */
  async #withRetry<T>(write: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await write();
      } catch (error) {
        if (this.#abandoned || attempt >= RESULT_WRITE_ATTEMPTS || !isDatabaseUnavailable(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(250 * 2 ** attempt, 4000)));
      }
    }
  }

  /** Hands our leased rows back to the outbox (shutdown deadline). */
  releaseAll(): Promise<number> {
    return release(this.options.db, this.options.owner);
  }
}
