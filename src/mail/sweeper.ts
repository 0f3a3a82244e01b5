// The sweeper: at boot and every few seconds, claims due outbox rows (retries, rows left by
// a saturated pool, rows released by a clean shutdown, leases of a crashed instance) and
// dispatches them like the fast path does. It claims only as many rows as the dispatcher
// has room for, so a backlog of any size is worked through in bounded memory; while a backlog
// lasts it sweeps again as soon as the dispatcher has room for a good claim, not a tick later.
import type pg from 'pg';
import type { Log } from '../logger.js';
import { insertMany, ACTIVATION_SCOPE } from '../db/tokens.js';
import { ACTIVATION_TTL_MS, generateToken } from '../tokens.js';
import type { Dispatcher } from './dispatcher.js';
import { claimDue, release } from '../db/outbox.js';
import type { Lease } from './leases.js';

export interface SweeperOptions {
  readonly db: pg.Pool;
  readonly dispatcher: Dispatcher;
  readonly log: Log;
  readonly lease: Lease;
  readonly intervalMs: number;
  /** Rows per claim query. */
  readonly claimLimit: number;
}

export class Sweeper {
  #stopped = true;
  #timer: NodeJS.Timeout | undefined;
  #cancelRoomWait: (() => void) | undefined;
  #running: Promise<void> | undefined;

  private readonly db: pg.Pool;
  private readonly dispatcher: Dispatcher;
  private readonly log: Log;

  constructor(private readonly options: SweeperOptions) {
    this.db = options.db;
    this.dispatcher = options.dispatcher;
    this.log = options.log;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#tick();
  }

  /** Stops claiming. Resolves once a sweep under way has dispatched what it claimed. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#cancelRoomWait?.();
    this.#cancelRoomWait = undefined;
    await this.#running;
  }

  #tick(): void {
    if (this.#stopped) return;
    // Not tracked in the task group: the group counts emails, and the drain stops the sweeper
    // itself. A failed sweep (the database is away) is logged and the next tick tries again.
    let backlog = false;
    this.#running = this.#sweep()
      .then(
        (more) => {
          backlog = more;
        },
        (err: unknown) => this.log.warn({ err }, 'sweep failed; retrying at the next tick'),
      )
      .finally(() => {
        this.#running = undefined;
        if (this.#stopped) return;
        if (backlog && !this.dispatcher.paused) {
          // Rows may still be due but the dispatcher is full: sweep again once a quarter of its
          // capacity (or a full claim) is free, rather than idle until the next tick.
          const places = Math.max(1, Math.min(this.options.claimLimit, Math.ceil(this.dispatcher.capacity / 4)));
          this.#cancelRoomWait = this.dispatcher.whenRoom(places, () => {
            this.#cancelRoomWait = undefined;
            this.#tick();
          });
        } else {
          // While sending is paused the breaker lets one probe through per interval: ticks find it.
          this.#timer = setTimeout(() => this.#tick(), this.options.intervalMs);
        }
      });
  }

  /** Claims and dispatches due rows while there is room; true when it stopped for want of room. */
  async #sweep(): Promise<boolean> {
    while (!this.#stopped) {
      // No more than signups must leave us while the claim runs (the sweeper's share, once we
      // say we are waiting): a claimed row that then finds no room goes back to the outbox due
      // now, behind every signup deferred meanwhile, so the oldest rows would starve.
      const room = Math.min(this.dispatcher.room, this.options.claimLimit, Math.max(1, this.dispatcher.sweeperShare));
      if (room === 0) return this.#wantRoom(true);
      this.#wantRoom(true);
      const claimedAt = Date.now();
      const rows = await claimDue(this.db, this.options.lease, room);
      if (rows.length === 0) return this.#wantRoom(false);
      if (this.#stopped || !this.dispatcher.tryReserveClaimed(rows.length)) {
        // Shutdown began, or signups took the room while we were claiming: hand the rows back.
        await release(this.db, this.options.lease.owner, rows);
        return this.#wantRoom(!this.#stopped);
      }
      // Only the hash of a token is stored, so a resend carries a fresh token; any earlier one
      // stays valid until it expires.
      const tokens = rows.map(() => generateToken());
      try {
        await insertMany(this.db, ACTIVATION_SCOPE, rows.map((row, i) => ({ hash: tokens[i]!.hash, userId: row.userId, ttlMs: ACTIVATION_TTL_MS })));
      } catch (error) {
        this.dispatcher.cancel(rows.length);
        await release(this.db, this.options.lease.owner, rows).catch(() => undefined);
        throw error;
      }
      const leaseUntil = claimedAt + this.options.lease.ms;
      rows.forEach((row, i) =>
        this.dispatcher.submit({ outboxId: row.outboxId, userId: row.userId, name: row.name, email: row.email, token: tokens[i]!.plaintext }, row.generation, leaseUntil),
      );
      this.log.debug({ claimed: rows.length }, 'sweeper dispatched due emails');
      if (rows.length < room) return this.#wantRoom(false);
    }
    return false;
  }

  /** Tells the dispatcher whether due rows are waiting for room (signups then leave the sweeper a share). */
  #wantRoom(waiting: boolean): boolean {
    this.dispatcher.sweeperWaiting = waiting;
    return waiting;
  }
}
