// The dispatcher holds the emails this instance has leased and moves each one through three
// places: its own queue (in memory, not yet handed to a worker), the worker pool (a small
// window, about two messages per SMTP connection, so a job in the pool is on a connection or
// about to be), and the result write. It owns the in-memory bound (at most `maxInFlight`
// emails held at once; a signup that finds no room leaves its email in the outbox for a
// sweeper), the lease heartbeat, the circuit breaker, and the hand-back at shutdown: what is
// not yet on an SMTP connection goes back to the outbox at once, so the drain waits only for
// messages being transmitted.
import type pg from 'pg';
import type { Piscina } from 'piscina';
import { markFailed, markSent, release, renewLeases, reviveDead, type Delivery, type HeldRow, type RetryPolicy } from '../db/outbox.js';
import { isTransientDatabaseError } from '../db/pool.js';
import type { Log } from '../logger.js';
import type { Metrics } from '../metrics.js';
import type { TaskGroup } from '../task-group.js';
import { CircuitBreaker, type BreakerEvent } from './breaker.js';
import { WriteCoalescer } from './coalescer.js';
import type { FailedResult, MailResult, MailTask, WelcomeJob } from './contract.js';
import type { Lease } from './leases.js';
import { welcomeMessageId } from './message-id.js';
import type { SendQuota } from './send-quota.js';

export interface DispatcherOptions {
  readonly pool: Piscina<MailTask, MailResult[]>;
  readonly db: pg.Pool;
  readonly group: TaskGroup;
  readonly log: Log;
  readonly metrics: Metrics;
  readonly lease: Lease;
  readonly quota: SendQuota;
  /** Shared with the workers: set to 1 when shutdown begins (see WorkerSettings.handBack). */
  readonly handBack: Int32Array;
  readonly maxInFlight: number;
  /** Emails handed to the pool at once: enough to keep every SMTP connection busy. */
  readonly poolWindow: number;
  readonly batchSize: number;
  /** MAIL_BATCH_WAIT_MS: how long a partial batch may wait for more emails, at the rates where that gathers one (see #batchWait). */
  readonly batchWaitMs: number;
  readonly messageIdDomain: string;
  readonly retry: RetryPolicy;
  readonly breaker: { readonly threshold: number; readonly probeMs: number };
}

/** A row this instance holds, from its lease until its result is written. */
interface HeldJob extends HeldRow {
  readonly job: WelcomeJob;
  /** Local clock time until which the lease is known to be ours (renewed by the heartbeat). */
  leaseUntil: number;
  where: 'queue' | 'pool' | 'result';
  /**
   * Until when (performance.now()) it may wait in the queue for companions: batchWaitMs after
   * its arrival if emails were arriving at a pace where waiting gathers a batch, else 0.
   */
  readonly waitsUntil: number;
  /** Set once the worker reported it sent: never released after that. */
  sent?: true;
}

const MAX_WRITE_BACKOFF_MS = 4000;
/** Gaps between emails are counted up to this long, so one quiet spell does not outweigh the traffic after it for long. */
const MAX_ARRIVAL_GAP_MS = 1000;

export class Dispatcher {
  readonly #o: DispatcherOptions;
  readonly #held = new Map<number, HeldJob>();
  #queue: HeldJob[] = [];
  #inPool = 0;
  /** Places taken by tryReserve() and not yet submitted or cancelled. */
  #reserved = 0;
  #pumpScheduled = false;
  /** When the last email was queued (performance.now()). */
  #lastQueuedAt = Number.NEGATIVE_INFINITY;
  /** The time between emails queued, smoothed over the last several (ms). */
  #arrivalGapMs = MAX_ARRIVAL_GAP_MS;
  /** Fires when the queue's head has waited long enough for a fuller batch. */
  #batchTimer: NodeJS.Timeout | undefined;
  #draining = false;
  /** Past the shutdown deadline: results no longer matter, nothing more is written. */
  #abandoned = false;
  /** Set while the sweeper has due rows it had no room for: signups then leave it a share. */
  #sweeperWaiting = false;
  #heartbeat: NodeJS.Timeout | undefined;
  /** Who waits for room (the sweeper, with a backlog): called once `places` are free. */
  #roomWaiters: { places: number; wake: () => void }[] = [];
  readonly #breaker: CircuitBreaker;
  /** Failure writes go one after another, so a breaker's revival always follows the writes it undoes. */
  #failureWrites: Promise<unknown> = Promise.resolve();
  /**
   * Marks rows sent, one UPDATE at a time: the results of every batch that settles while one
   * is under way go out together in the next, so under load one statement and one commit
   * carry many batches.
   */
  readonly #sentWriter = new WriteCoalescer<HeldJob>((jobs) => this.#writeSent(jobs));

  constructor(options: DispatcherOptions) {
    this.#o = options;
    this.#breaker = new CircuitBreaker(options.breaker);
  }

  /** Emails held in memory or reserved, not yet settled. */
  get inFlight(): number {
    return this.#reserved + this.#held.size;
  }

  /**
   * The most emails held at once: MAIL_MAX_IN_FLIGHT, or under a send-rate quota no more than
   * can go out within one lease (the rest wait in the outbox, not in memory).
   */
  get capacity(): number {
    const rate = this.#o.quota.effectiveRate;
    if (rate === null) return this.#o.maxInFlight;
    return Math.min(this.#o.maxInFlight, Math.max(this.#o.poolWindow, Math.ceil((rate * this.#o.lease.ms) / 1000)));
  }

  /** Sending is paused by the circuit breaker. */
  get paused(): boolean {
    return this.#breaker.open;
  }

  /**
   * How many rows the sweeper may claim now. None while draining; while paused, one probe
   * when it is due and nothing else is held.
   */
  get room(): number {
    if (this.#draining) return 0;
    if (this.#breaker.open) return this.#breaker.probeDue && this.inFlight === 0 ? 1 : 0;
    return Math.max(0, this.capacity - this.inFlight);
  }

  /**
   * The places signups leave to the sweeper while it waits for room: a quarter of the capacity,
   * so retries, released rows and expired leases are sent under sustained load too.
   */
  get sweeperShare(): number {
    return Math.floor(this.capacity / 4);
  }

  /** A signup takes a place, if there is one; every reservation ends in submit() or cancel(). */
  tryReserve(): boolean {
    if (this.#draining || this.#breaker.open) return false;
    const share = this.#sweeperWaiting ? this.sweeperShare : 0;
    if (this.inFlight + 1 > this.capacity - share) return false;
    this.#reserved++;
    return true;
  }

  /** The sweeper takes `n` places for rows it claimed. */
  tryReserveClaimed(n: number): boolean {
    if (n > this.room) return false;
    this.#reserved += n;
    return true;
  }

  cancel(n = 1): void {
    this.#reserved -= n;
    this.#settled();
  }

  /** The sweeper says whether it left due rows in the outbox for want of room. */
  set sweeperWaiting(waiting: boolean) {
    this.#sweeperWaiting = waiting;
  }

  /**
   * Calls `wake` once, as soon as `places` are free (at most maxInFlight). Returns a function
   * that cancels the wait. A sweeper with a backlog uses it to claim more as soon as there is
   * room, instead of idling until its next tick.
   */
  whenRoom(places: number, wake: () => void): () => void {
    const waiter = { places: Math.min(places, this.#o.maxInFlight), wake };
    this.#roomWaiters.push(waiter);
    this.#notifyRoom();
    return () => {
      this.#roomWaiters = this.#roomWaiters.filter((w) => w !== waiter);
    };
  }

  /** Queues a reserved job, leased to us at `generation`; it goes to the pool in the next batch. */
  submit(job: WelcomeJob, generation: number, leaseUntil: number): void {
    this.#reserved--;
    const now = performance.now();
    this.#arrivalGapMs = 0.8 * this.#arrivalGapMs + 0.2 * Math.min(now - this.#lastQueuedAt, MAX_ARRIVAL_GAP_MS);
    this.#lastQueuedAt = now;
    const { batchWaitMs, batchSize } = this.#o;
    // Close enough together for companions to come within the wait, and too sparse for a full
    // batch to gather in half of it (faster than that, batches form without waiting: see #batchWait).
    const mayWait = this.#arrivalGapMs < batchWaitMs && 2 * this.#arrivalGapMs * batchSize > batchWaitMs;
    const held: HeldJob = { outboxId: job.outboxId, generation, job, leaseUntil, where: 'queue', waitsUntil: mayWait ? now + batchWaitMs : 0 };
    this.#held.set(job.outboxId, held);
    this.#queue.push(held);
    if (this.#breaker.open) this.#breaker.probeSent(job.outboxId);
    this.#schedulePump();
  }

  /** Starts the lease heartbeat: every third of a lease, the leases of held rows are extended. */
  start(): void {
    this.#heartbeat ??= setInterval(() => void this.#renewLeases(), this.#heartbeatMs);
  }

  get #heartbeatMs(): number {
    return Math.max(50, Math.floor(this.#o.lease.ms / 3));
  }

  /** Jobs submitted in the same turn of the event loop go to the pool together. */
  #schedulePump(): void {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /** Hands queued jobs to the pool while its window has room. */
  #pump(): void {
    const window = this.#poolWindow();
    while (!this.#draining && this.#queue.length > 0 && this.#inPool < window) {
      const wait = this.#batchWait(window);
      if (wait > 0) {
        this.#batchTimer ??= setTimeout(() => {
          this.#batchTimer = undefined;
          this.#pump();
        }, wait);
        return;
      }
      const want = Math.min(this.#o.batchSize, window - this.#inPool, this.#queue.length);
      // Under a send-rate quota, only as many as there are permits; the rest wait for more.
      const permitted = this.#o.quota.take(want, () => this.#schedulePump());
      if (permitted === 0) return;
      const now = Date.now();
      const batch: HeldJob[] = [];
      while (batch.length < permitted && this.#queue.length > 0) {
        const held = this.#queue.shift()!;
        // Its lease could not be renewed (the database was away longer than the lease): another
        // instance may already be sending it, so it must not reach SMTP from here.
        if (held.leaseUntil <= now) this.#forget([held], 'lease lost before sending');
        else batch.push(held);
      }
      if (batch.length === 0) continue;
      for (const held of batch) held.where = 'pool';
      this.#inPool += batch.length;
      this.#track(this.#send(batch), batch);
    }
  }

  /**
   * How much longer the queue's head may wait for a fuller batch, in ms (0 or less: send now).
   * At a hundred-odd signups a second each email would otherwise be a pool task of its own,
   * and the worker, the SMTP server and the "sent" write would each wake up, with cold
   * caches, once per email. So while emails arrive less than MAIL_BATCH_WAIT_MS apart (on
   * average over the last few), each waits up to that long, from its own arrival, for the
   * batch to fill. A lone signup (the first after a quiet spell) goes at once, and so does a
   * full batch, or a partial one when the pool has no room for a full one. Nothing waits
   * either when emails come fast enough to fill a batch within half the wait: they then batch
   * by themselves (those queued in one turn of the event loop, and behind a busy pool, go
   * together), and holding partial batches back would leave SMTP connections idle and cost
   * throughput (measured: about 5 % fewer emails/s under `npm run bench -- e2e`'s load).
   * With the defaults (40 ms, batches of 10) emails wait between about 25 and 500 a second:
   * 40 ms rather than 20 gathers twice the emails per wake-up at the real password cost's
   * hundred-odd a second, and still leaves 20 signups/s (50 ms apart) unbatched.
   */
  #batchWait(window: number): number {
    if (this.#queue.length >= this.#o.batchSize || window - this.#inPool < this.#o.batchSize) return 0;
    return this.#queue[0]!.waitsUntil - performance.now();
  }

  /**
   * Emails in the pool at once. Under a send-rate quota, about 75 ms worth (enough for one instance to keep the rate on a local network):
   * a permit is spent when its email enters the pool, so a worker that falls behind (a busy
   * core) must not gather many permitted emails and then send them in one burst.
   */
  #poolWindow(): number {
    const rate = this.#o.quota.effectiveRate;
    return rate === null ? this.#o.poolWindow : Math.min(this.#o.poolWindow, Math.max(2, Math.ceil(rate * 0.075)));
  }

  #track(work: Promise<void>, jobs: readonly HeldJob[]): void {
    try {
      this.#o.group.track(work, { component: 'dispatcher', outboxIds: jobs.map((held) => held.outboxId) }, jobs.length);
    } catch {
      // The group is closed (past the drain): the work still runs; its failure is only logged.
      work.catch((err: unknown) => this.#o.log.warn({ err, count: jobs.length }, 'mail work failed after the drain'));
    }
  }

  async #send(batch: HeldJob[]): Promise<void> {
    let results: MailResult[];
    const started = performance.now();
    try {
      results = await this.#o.pool.run(batch.map((held) => held.job));
    } catch (error) {
      // The worker thread died or the pool was destroyed: nothing says whether the messages
      // left, so each is retried (at-least-once; the Message-ID makes a resend recognisable).
      const message = error instanceof Error ? error.message : String(error);
      this.#o.log.warn({ err: error, count: batch.length }, 'mail worker task failed; its emails will be retried');
      results = batch.map((held): FailedResult => ({ outboxId: held.outboxId, status: 'failed', code: 'EWORKER', responseCode: null, kind: 'provider', command: null, phase: 'unknown', message }));
    }
    this.#inPool -= batch.length;
    this.#schedulePump();
    const byId = new Map(batch.map((held) => [held.outboxId, held]));
    // Known sent: never released, even past the deadline (a resend would be a duplicate).
    for (const result of results) if (result.status === 'sent') byId.get(result.outboxId)!.sent = true;
    if (this.#abandoned) return;
    this.#o.metrics.observeBatch(results, (performance.now() - started) / 1000);
    for (const held of batch) held.where = 'result';
    await this.#record(byId, results);
  }

  async #record(byId: ReadonlyMap<number, HeldJob>, results: readonly MailResult[]): Promise<void> {
    const sent: HeldJob[] = [];
    const released: HeldJob[] = [];
    const failed: { held: HeldJob; result: FailedResult; permanent: boolean }[] = [];
    let opened: { failures: number; revive: readonly number[]; last: FailedResult } | undefined;
    for (const result of results) {
      const held = byId.get(result.outboxId)!;
      if (result.status === 'sent') {
        sent.push(held);
        const event = this.#breaker.success();
        if (event?.type === 'closed') this.#o.log.info({ pausedMs: event.pausedMs }, 'mail provider recovered');
      } else if (result.status === 'released') {
        released.push(held);
      } else {
        const { judged, event } = this.#judge(held, result);
        failed.push(judged);
        if (event?.type === 'opened') opened = { failures: event.failures, revive: event.revive, last: result };
      }
    }
    this.#o.metrics.providerPaused.set(this.#breaker.open ? 1 : 0);
    const failureWrite = failed.length > 0 ? this.#writeFailures(failed) : undefined;
    // Paused only now: the revival must be queued after this batch's failure write, which may
    // hold some of the deaths it undoes (the one that reached the threshold, at least).
    if (opened) this.#pause(opened.failures, opened.revive, opened.last);
    await Promise.all([this.#sentWriter.add(sent), released.length > 0 ? this.#releaseHeld(released) : undefined, failureWrite]);
  }

  /** A failure's fate: dead at once only if it is about this email and the provider is otherwise healthy. */
  #judge(held: HeldJob, result: FailedResult): { judged: { held: HeldJob; result: FailedResult; permanent: boolean }; event: BreakerEvent | undefined } {
    const permanent = result.kind === 'permanent' && !this.#breaker.open;
    if (result.kind === 'throttled') this.#o.quota.throttled();
    if (result.kind === 'provider' || result.kind === 'permanent') this.#o.metrics.providerFaults.inc({ phase: result.phase });
    const event = this.#breaker.failure(result.kind, held.outboxId, permanent);
    return { judged: { held, result, permanent }, event };
  }

  /** The breaker opened: hand back everything not yet on its way to SMTP, and undo the run's deaths. */
  #pause(failures: number, revive: readonly number[], last: FailedResult): void {
    this.#o.log.error({ failures, code: last.code, responseCode: last.responseCode, command: last.command, reason: last.message }, 'mail provider failing; sending paused');
    const queued = this.#queue.splice(0);
    if (queued.length > 0) this.#track(this.#releaseHeld(queued).then(() => undefined), queued);
    if (revive.length > 0) {
      this.#failureWrites = this.#failureWrites.then(() =>
        this.#withRetry(() => reviveDead(this.#o.db, revive)).then((n) => this.#o.log.warn({ revived: n }, 'emails refused during the provider failure are pending again')),
      );
    }
  }

  #writeFailures(failed: readonly { held: HeldJob; result: FailedResult; permanent: boolean }[]): Promise<void> {
    const write = this.#failureWrites.then(async () => {
      const failures = failed.map(({ held, result, permanent }) => ({ ...heldRow(held), permanent, throttled: result.kind === 'throttled', error: describeFailure(result) }));
      const outcomes = await this.#withRetry(() => markFailed(this.#o.db, this.#o.lease.owner, failures, this.#o.retry));
      this.#countStale(failed.length - outcomes.length, 'failure');
      const results = new Map(failed.map(({ result }) => [result.outboxId, result]));
      for (const outcome of outcomes) {
        const failure = results.get(outcome.outboxId)!;
        const fields = { outboxId: outcome.outboxId, attempt: outcome.attempts, code: failure.code, responseCode: failure.responseCode, command: failure.command };
        this.#o.metrics.observeOutcome(outcome.status, failure.code);
        if (outcome.status === 'dead') this.#o.log.error(fields, 'email gave up: marked dead');
        else this.#o.log.warn(fields, 'email failed; retry scheduled');
      }
    });
    this.#failureWrites = write.catch(() => undefined);
    return write.finally(() => this.#forget(failed.map(({ held }) => held)));
  }

  async #writeSent(jobs: HeldJob[]): Promise<void> {
    try {
      const deliveries: Delivery[] = jobs.map((held) => ({ ...heldRow(held), messageId: welcomeMessageId(held.outboxId, this.#o.messageIdDomain) }));
      const written = await this.#withRetry(() => markSent(this.#o.db, this.#o.lease.owner, deliveries));
      this.#countStale(jobs.length - written.size, 'sent');
    } finally {
      this.#forget(jobs);
    }
  }

  async #releaseHeld(jobs: readonly HeldJob[], dueInMs = 0): Promise<number> {
    try {
      return await this.#withRetry(() => release(this.#o.db, this.#o.lease.owner, jobs.map(heldRow), dueInMs));
    } finally {
      this.#forget(jobs);
    }
  }

  #countStale(count: number, what: string): void {
    if (count <= 0) return;
    // Another instance took these rows over after our lease expired: its result stands.
    this.#o.metrics.staleResults.inc(count);
    this.#o.log.debug({ count, what }, 'stale result not written: the row was taken over');
  }

  /** Stops holding these jobs: their places are free again. */
  #forget(jobs: readonly HeldJob[], why?: string): void {
    for (const held of jobs) this.#held.delete(held.outboxId);
    if (why !== undefined) this.#o.log.warn({ count: jobs.length }, why);
    this.#settled();
  }

  #settled(): void {
    if (this.#roomWaiters.length > 0) this.#notifyRoom();
  }

  #notifyRoom(): void {
    const room = this.room;
    const ready = this.#roomWaiters.filter((w) => w.places <= room);
    if (ready.length === 0) return;
    this.#roomWaiters = this.#roomWaiters.filter((w) => w.places > room);
    for (const waiter of ready) waiter.wake();
  }

  /** The heartbeat: one UPDATE extends the leases we hold that are due; a row we no longer own is dropped before SMTP. */
  async #renewLeases(): Promise<void> {
    const startedAt = Date.now();
    // Only leases taken or renewed more than half a beat ago: the others still have over two
    // and a half beats to run, so the next beat renews them with a beat and a half to spare.
    // Under load most rows are sent within a beat of their lease and are never renewed: each
    // renewal is a row version (and index entries) that PostgreSQL writes and vacuums.
    const renewBefore = startedAt + this.#o.lease.ms - this.#heartbeatMs / 2;
    const held = [...this.#held.values()].filter((h) => h.leaseUntil <= renewBefore);
    if (held.length === 0 || this.#abandoned) return;
    let renewed: Set<number>;
    try {
      renewed = await renewLeases(this.#o.db, this.#o.lease, held.map(heldRow));
    } catch (err) {
      this.#o.log.warn({ err, held: held.length }, 'could not renew leases; emails whose lease runs out will not be sent from here');
      return;
    }
    const lost = held.filter((h) => !renewed.has(h.outboxId) && this.#held.get(h.outboxId) === h);
    for (const h of held) if (renewed.has(h.outboxId)) h.leaseUntil = startedAt + this.#o.lease.ms;
    const lostQueued = lost.filter((h) => h.where === 'queue');
    if (lostQueued.length > 0) {
      this.#queue = this.#queue.filter((h) => !lostQueued.includes(h));
      this.#forget(lostQueued, 'leases taken over before sending: dropped');
    }
  }

  /**
   * Shutdown begins: the workers hand back every job not yet on an SMTP connection, and the
   * queue goes back to the outbox now, due at once for another instance. Resolves with how
   * many rows the queue gave back. What remains held is being transmitted.
   */
  async handBack(): Promise<number> {
    this.#draining = true;
    clearTimeout(this.#batchTimer);
    Atomics.store(this.#o.handBack, 0, 1);
    const queued = this.#queue.splice(0);
    return queued.length === 0 ? 0 : this.#releaseHeld(queued);
  }

  /** The shutdown deadline passed: from now on no result is written (the pool is destroyed next). */
  abandon(): void {
    this.#abandoned = true;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#batchTimer);
  }

  /**
   * After the pool is destroyed (no worker can still send): hands back every row whose result
   * was not recorded, except those reported sent, whose resend would be a duplicate (their
   * "sent" write may still land). Resolves with how many rows moved.
   */
  releaseUnfinished(): Promise<number> {
    const unfinished = [...this.#held.values()].filter((held) => !held.sent);
    return release(this.#o.db, this.#o.lease.owner, unfinished.map(heldRow));
  }

  /** Stops the heartbeat (end of the drain). */
  stop(): void {
    clearInterval(this.#heartbeat);
    this.#heartbeat = undefined;
  }

  /**
   * A result not written means a resend later (the lease expires), not a loss; still, while the
   * database refuses for a passing reason, keep trying (the heartbeat keeps the lease) until
   * the shutdown deadline abandons the work.
   */
  async #withRetry<T>(write: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await write();
      } catch (error) {
        if (this.#abandoned || !isTransientDatabaseError(error)) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(100 * 2 ** attempt, MAX_WRITE_BACKOFF_MS)));
      }
    }
  }
}

function heldRow(held: HeldJob): HeldRow {
  return { outboxId: held.outboxId, generation: held.generation };
}

function describeFailure(failure: FailedResult): string {
  const phase = failure.command ? ` at ${failure.command}` : '';
  return `${failure.code}${failure.responseCode ? ` ${failure.responseCode}` : ''}${phase}: ${failure.message}`;
}
