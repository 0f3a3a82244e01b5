// The provider's send-rate quota, shared by every instance through PostgreSQL (a token bucket
// in one row, src/db/send-quota.ts). The dispatcher asks take() before it hands emails to the
// pool; permits come from the database in small batches, at most one query per 25 ms, and only
// as many as can go out now, so an instance never sits on permits another could use. A
// throttling reply halves everyone's rate, which then recovers additively. With no rate
// configured and no throttling, take() answers at once and costs nothing.
import type pg from 'pg';
import { configureQuota, readEffectiveRate, takePermits, throttleQuota } from '../db/send-quota.js';
import type { Log } from '../logger.js';
import type { Metrics } from '../metrics.js';

export interface SendQuotaOptions {
  readonly db: pg.Pool;
  readonly log: Log;
  readonly metrics: Metrics;
  /** MAIL_RATE_PER_SECOND; 0: unlimited. */
  readonly ratePerSecond: number;
}

/**
 * The fewest milliseconds between two permit queries of one instance. A query asks only for
 * what the pool has room for now (under a quota, about 75 ms of the rate, part of it still
 * sending), so queries must come often enough for that to add up to the rate: with 50 ms, one
 * instance alone sent 77/s of a 100/s quota (test/send-quota.test.ts), with 25 ms 97/s. A
 * waiting instance then makes at most 40 small single-row UPDATEs a second.
 */
const MIN_QUERY_GAP_MS = 25;
/** How often an unlimited instance looks whether another one was throttled. */
const POLL_MS = 1000;
/** After a failed query (the database is away), wait this long before the next. */
const RETRY_MS = 1000;

export class SendQuota {
  readonly #o: SendQuotaOptions;
  /** Null: unlimited. */
  #effectiveRate: number | null;
  #permits = 0;
  #fetching = false;
  #nextQueryAt = 0;
  #waiters: (() => void)[] = [];
  /** When the current wait for permits began (for the wait-time metric). */
  #waitingSince: number | undefined;
  #poll: NodeJS.Timeout | undefined;
  #lastThrottleReport = 0;

  constructor(options: SendQuotaOptions) {
    this.#o = options;
    this.#effectiveRate = options.ratePerSecond > 0 ? options.ratePerSecond : null;
    options.metrics.sendRateConfigured.set(options.ratePerSecond);
  }

  /** Permits per second this instance sends at now (shared by all); null: unlimited. */
  get effectiveRate(): number | null {
    return this.#effectiveRate;
  }

  /** Writes the configured rate (a restart with a new rate takes it) and starts watching the shared rate. */
  async start(): Promise<void> {
    await configureQuota(this.#o.db, this.#o.ratePerSecond);
    this.#setRate(await readEffectiveRate(this.#o.db));
    this.#poll = setInterval(() => {
      if (this.#effectiveRate !== null || this.#fetching) return;
      readEffectiveRate(this.#o.db).then((rate) => this.#setRate(rate), () => undefined);
    }, POLL_MS).unref();
  }

  stop(): void {
    clearInterval(this.#poll);
  }

  /**
   * Permits for up to `n` emails, now. Fewer (maybe none) when the quota is spent: `wake` is
   * then called once more permits may be there.
   */
  take(n: number, wake: () => void): number {
    if (this.#effectiveRate === null) return n;
    const granted = Math.min(n, this.#permits);
    this.#permits -= granted;
    if (granted < n) {
      this.#waiters.push(wake);
      this.#waitingSince ??= performance.now();
      this.#fetch(n - granted);
    }
    return granted;
  }

  /** A throttling reply: every instance slows down (reported to the database at most once a second from here). */
  throttled(): void {
    this.#o.metrics.throttledReplies.inc();
    const now = Date.now();
    if (now - this.#lastThrottleReport < 1000) return;
    this.#lastThrottleReport = now;
    // Until the database answers, stop taking permits for free.
    this.#effectiveRate ??= 1;
    this.#permits = 0;
    throttleQuota(this.#o.db).then(
      (rate) => {
        this.#setRate(rate);
        this.#o.log.warn({ effectiveRate: rate }, 'provider throttling: send rate lowered for every instance');
      },
      (err: unknown) => this.#o.log.warn({ err }, 'could not record provider throttling'),
    );
  }

  #fetch(want: number): void {
    if (this.#fetching) return;
    this.#fetching = true;
    const delay = Math.max(0, this.#nextQueryAt - Date.now());
    setTimeout(() => {
      takePermits(this.#o.db, want).then(
        (grant) => {
          this.#permits += grant.granted;
          this.#setRate(grant.effectiveRate);
          // Next query: when at least one more permit is due, and never sooner than the gap.
          const untilNext = grant.effectiveRate === null || grant.granted > 0 ? 0 : ((1 - grant.left) / grant.effectiveRate) * 1000;
          this.#nextQueryAt = Date.now() + Math.max(MIN_QUERY_GAP_MS, untilNext);
        },
        (err: unknown) => {
          this.#o.log.warn({ err }, 'could not take send permits; retrying');
          this.#nextQueryAt = Date.now() + RETRY_MS;
        },
      ).finally(() => {
        this.#fetching = false;
        if (this.#waitingSince !== undefined && (this.#permits > 0 || this.#effectiveRate === null)) {
          this.#o.metrics.permitWaitSeconds.inc((performance.now() - this.#waitingSince) / 1000);
          this.#waitingSince = undefined;
        }
        const waiters = this.#waiters;
        this.#waiters = [];
        for (const wake of waiters) wake();
      });
    }, delay);
  }

  #setRate(rate: number | null): void {
    this.#effectiveRate = rate;
    this.#o.metrics.sendRateEffective.set(rate ?? 0);
  }
}
