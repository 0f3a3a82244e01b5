// The circuit breaker: after `threshold` consecutive failures that are not about one email
// (provider faults, or a run of "permanent" refusals across different recipients, which is
// what a paused or sandboxed account answers), this instance stops handing emails to SMTP.
// While it is open, one probe email goes out every probe interval (doubling up to a minute
// while it keeps failing); the first success closes it. Throttling replies are not counted:
// they ask us to slow down, not to stop. Framework-free: the dispatcher asks and reports.
import type { FailureKind } from './contract.js';

export interface BreakerOptions {
  readonly threshold: number;
  readonly probeMs: number;
  readonly maxProbeMs?: number;
  readonly now?: () => number;
}

export type BreakerEvent =
  | { readonly type: 'opened'; readonly failures: number; readonly revive: readonly number[] }
  | { readonly type: 'closed'; readonly pausedMs: number };

const MAX_PROBE_MS = 60_000;

export class CircuitBreaker {
  #consecutive = 0;
  /** Emails marked dead in the current run of failures: given back if the run turns out to be the account's. */
  #deadInRun: number[] = [];
  #openedAt: number | undefined;
  #probeMs: number;
  #nextProbeAt = 0;
  /** The email sent as the latest probe: only its failure lengthens the interval. */
  #probeId: number | undefined;
  readonly #now: () => number;

  constructor(private readonly options: BreakerOptions) {
    this.#probeMs = options.probeMs;
    this.#now = options.now ?? Date.now;
  }

  get open(): boolean {
    return this.#openedAt !== undefined;
  }

  /** While open: whether a probe may be sent now. */
  get probeDue(): boolean {
    return this.open && this.#now() >= this.#nextProbeAt;
  }

  /** A probe was handed to SMTP: the next one waits a full interval. */
  probeSent(outboxId: number): void {
    this.#probeId = outboxId;
    this.#nextProbeAt = this.#now() + this.#probeMs;
  }

  /** A message was accepted. Returns 'closed' if that ended a pause. */
  success(): BreakerEvent | undefined {
    this.#consecutive = 0;
    this.#deadInRun = [];
    if (this.#openedAt === undefined) return undefined;
    const pausedMs = this.#now() - this.#openedAt;
    this.#openedAt = undefined;
    this.#probeId = undefined;
    this.#probeMs = this.options.probeMs;
    return { type: 'closed', pausedMs };
  }

  /**
   * A failed attempt of email `outboxId`; `dead` when the failure made it dead (a permanent
   * refusal while the breaker was closed). Returns 'opened' when this failure reached the
   * threshold.
   */
  failure(kind: FailureKind, outboxId: number, dead = false): BreakerEvent | undefined {
    if (kind === 'throttled') return undefined;
    if (this.open) {
      // Emails already in the pool when the breaker opened fail too, right after it: they are
      // not probes, and doubling for each of them would push the first probe to the maximum.
      if (outboxId !== this.#probeId) return undefined;
      // A failed probe: wait longer before the next one.
      this.#probeId = undefined;
      this.#probeMs = Math.min(this.#probeMs * 2, this.options.maxProbeMs ?? MAX_PROBE_MS);
      this.#nextProbeAt = this.#now() + this.#probeMs;
      return undefined;
    }
    this.#consecutive++;
    if (dead) this.#deadInRun.push(outboxId);
    if (this.#consecutive < this.options.threshold) return undefined;
    this.#openedAt = this.#now();
    this.#nextProbeAt = this.#openedAt + this.#probeMs;
    const revive = this.#deadInRun;
    this.#deadInRun = [];
    return { type: 'opened', failures: this.#consecutive, revive };
  }
}
