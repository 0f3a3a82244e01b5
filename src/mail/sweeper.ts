// The sweeper: at boot and every few seconds, claims due outbox rows (retries, rows left by
// a saturated pool, rows released by a clean shutdown, leases of a crashed instance) and
// dispatches them like the fast path does. It claims only as many rows as the dispatcher
// has room for, so a backlog of any size is worked through in bounded memory; while a backlog
// lasts it sweeps again as soon as the dispatcher has room for a good claim, not a tick later.
import type pg from 'pg';
import type { Log } from '../logger.js';
import { insertMany, ACTIVATION_SCOPE } from '../db/tokens.js';
import type { TaskGroup } from '../task-group.js';
import { ACTIVATION_TTL_MS, generateToken } from '../tokens.js';
import type { Dispatcher } from './dispatcher.js';
import { claimDue, release } from '../db/outbox.js';
import type { Lease } from './leases.js';

export interface SweeperOptions {
  readonly db: pg.Pool;
  readonly dispatcher: Dispatcher;
  readonly group: TaskGroup;
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
  private readonly group: TaskGroup;
  private readonly log: Log;

  constructor(private readonly options: SweeperOptions) {
    this.db = options.db;
    this.dispatcher = options.dispatcher;
    this.group = options.group;
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
    // Tracked like any background work; a failed sweep (the database is away) is logged by
    // the group and the next tick tries again.
    let backlog = false;
    this.#running = this.group
      .track(this.#sweep(), { component: 'sweeper' })
      .then(
        (more) => {
          backlog = more;
        },
        () => undefined,
      )
      .finally(() => {
        this.#running = undefined;
        if (this.#stopped) return;
        if (backlog) {
          // Rows may still be due but the dispatcher is full: sweep again once a quarter of its
          // capacity (or a full claim) is free, rather than idle until the next tick.
          const places = Math.max(1, Math.min(this.options.claimLimit, Math.ceil(this.dispatcher.capacity / 4)));
          this.#cancelRoomWait = this.dispatcher.whenRoom(places, () => {
            this.#cancelRoomWait = undefined;
            this.#tick();
          });
        } else {
          this.#timer = setTimeout(() => this.#tick(), this.options.intervalMs);
        }
      });
  }

  /** Claims and dispatches due rows while there is room; true when it stopped for want of room. */
  async #sweep(): Promise<boolean> {
    while (!this.#stopped) {
      const room = Math.min(this.dispatcher.room, this.options.claimLimit);
      if (room === 0) return true;
      const rows = await claimDue(this.db, this.options.lease, room);
      if (rows.length === 0) return false;
      if (!this.dispatcher.tryReserve(rows.length)) {
        // Fast-path signups took the room while we were claiming: hand the rows back.
        await release(this.db, this.options.lease.owner, rows.map((row) => row.outboxId));
        return true;
      }
      // Only the hash of a token is stored, so a resend carries a fresh token; any earlier one
      // stays valid until it expires.
      const tokens = rows.map(() => generateToken());
      try {
        await insertMany(this.db, ACTIVATION_SCOPE, rows.map((row, i) => ({ hash: tokens[i]!.hash, userId: row.userId, ttlMs: ACTIVATION_TTL_MS })));
      } catch (error) {
        this.dispatcher.cancel(rows.length);
        await release(this.db, this.options.lease.owner, rows.map((row) => row.outboxId)).catch(() => undefined);
        throw error;
      }
      rows.forEach((row, i) => this.dispatcher.submit({ outboxId: row.outboxId, userId: row.userId, name: row.name, email: row.email, token: tokens[i]!.plaintext }));
      this.log.debug({ claimed: rows.length }, 'sweeper dispatched due emails');
      if (rows.length < room) return false;
    }
    return false;
  }
}
