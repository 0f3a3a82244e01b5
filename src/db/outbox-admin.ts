// The operator's queries on email_outbox (npm run outbox): see, requeue and purge what the
// pipeline gave up on. Each takes its client first. None of them touches a `sending` row:
// that one is leased to a running instance, which will write its result.
import type { Queryable } from './pool.js';

export const OUTBOX_STATUSES = ['pending', 'sending', 'sent', 'dead'] as const;
export type OutboxStatus = (typeof OUTBOX_STATUSES)[number];

/** Statuses a purge may delete: finished rows only. Pending and sending rows are emails still owed. */
export const PURGEABLE_STATUSES = ['dead', 'sent'] as const;
export type PurgeableStatus = (typeof PURGEABLE_STATUSES)[number];

/** Reasons are grouped on their first characters: enough to tell them apart, short enough to read. */
const REASON_LENGTH = 160;
const REASON_GROUPS = 20;
const PURGE_BATCH = 1000;

export interface OutboxStats {
  readonly counts: Record<OutboxStatus, number>;
  readonly oldestPending: { readonly id: number; readonly createdAt: Date; readonly ageSeconds: number } | null;
  /** The most frequent reasons first, at most 20 groups. */
  readonly deadByReason: { readonly reason: string; readonly count: number }[];
}

export async function outboxStats(db: Queryable): Promise<OutboxStats> {
  const counts = { pending: 0, sending: 0, sent: 0, dead: 0 };
  const byStatus = await db.query<{ status: OutboxStatus; n: number }>('SELECT status, count(*)::int AS n FROM email_outbox GROUP BY status');
  for (const row of byStatus.rows) counts[row.status] = row.n;

  const oldest = await db.query<{ id: number; createdAt: Date; ageSeconds: number }>(
    `SELECT id, created_at AS "createdAt", extract(epoch FROM now() - created_at)::float8 AS "ageSeconds"
       FROM email_outbox WHERE status = 'pending' ORDER BY created_at, id LIMIT 1`,
  );

  // Addresses (and Message-IDs) in a reply would make every row its own group: "550 5.1.1
  // <bob@example.com>: unknown user" and the same for alice are one reason.
  const reasons = await db.query<{ reason: string; count: number }>(
    `SELECT left(regexp_replace(coalesce(last_error, '(no reason recorded)'), '<?[^\\s<>@]+@[^\\s<>@]+>?', '<address>', 'g'), $1) AS reason,
            count(*)::int AS count
       FROM email_outbox WHERE status = 'dead'
      GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $2`,
    [REASON_LENGTH, REASON_GROUPS],
  );
  return { counts, oldestPending: oldest.rows[0] ?? null, deadByReason: reasons.rows };
}

export interface OutboxRow {
  readonly id: number;
  /** Null only if the user row is gone (it cascades, so in practice never). */
  readonly email: string | null;
  readonly status: OutboxStatus;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** The most recently changed rows of one status first. */
export async function listOutbox(db: Queryable, status: OutboxStatus, limit: number): Promise<OutboxRow[]> {
  const { rows } = await db.query<OutboxRow>(
    `SELECT o.id, u.email::text AS email, o.status, o.attempts, o.last_error AS "lastError",
            o.created_at AS "createdAt", o.updated_at AS "updatedAt"
       FROM email_outbox o LEFT JOIN users u ON u.id = o.user_id
      WHERE o.status = $1
      ORDER BY o.updated_at DESC, o.id DESC LIMIT $2`,
    [status, limit],
  );
  return rows;
}

/**
 * Puts dead rows back in the queue: pending, due now, attempts from zero, a full retry window. `ids` narrows it to
 * those rows (rows of those ids that are not dead are left alone). last_error is kept, so the
 * operator still sees why it died until the next attempt writes its own result. Returns the
 * ids it moved.
 */
export async function requeueDead(db: Queryable, ids?: readonly number[]): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>(
    `UPDATE email_outbox
        SET status = 'pending', next_attempt_at = now(), attempts = 0, updated_at = now(), retry_window_start = now(),
            lease_owner = NULL, lease_expires_at = NULL
      WHERE status = 'dead' AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
      RETURNING id`,
    [ids ?? null],
  );
  return rows.map((row) => row.id).sort((a, b) => a - b);
}

/**
 * Deletes rows of a finished status whose last change is older than `olderThanMs`, in batches
 * so no statement holds many row locks or runs long. Returns how many rows it deleted.
 */
export async function purgeOutbox(db: Queryable, status: PurgeableStatus, olderThanMs: number): Promise<number> {
  let total = 0;
  for (;;) {
    const { rowCount } = await db.query(
      `DELETE FROM email_outbox WHERE id IN (
         SELECT id FROM email_outbox
          WHERE status = $1 AND updated_at < now() - $2::float8 * interval '1 millisecond'
          LIMIT $3 FOR UPDATE SKIP LOCKED)`,
      [status, olderThanMs, PURGE_BATCH],
    );
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < PURGE_BATCH) return total;
  }
}
