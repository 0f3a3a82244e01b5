// Retention's SQL: deleting old `sent` outbox rows and expired tokens, a small batch per
// statement, and the advisory lock that lets one instance at a time do it. Each takes its
// client first.
import type { Queryable } from './pool.js';

// The two-key form of advisory locks, whose key space does not overlap the one-key form that
// node-pg-migrate locks with: 0x6d6f6666 ("moff") for this service, 1 for retention.
const LOCK_KEYS = [0x6d6f6666, 1] as const;

/** A session lock: held until unlockRetention on the same client, or until its connection ends. */
export async function tryLockRetention(db: Queryable): Promise<boolean> {
  const { rows } = await db.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, $2) AS locked', [...LOCK_KEYS]);
  return rows[0]?.locked === true;
}

export async function unlockRetention(db: Queryable): Promise<void> {
  await db.query('SELECT pg_advisory_unlock($1, $2)', [...LOCK_KEYS]);
}

/**
 * Deletes up to `limit` `sent` rows delivered more than `days` days ago, oldest first (the
 * partial index on sent_at finds them). Pending, sending and dead rows are never touched.
 */
export async function deleteSentBefore(db: Queryable, days: number, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM email_outbox WHERE id IN (
       SELECT id FROM email_outbox
        WHERE status = 'sent' AND sent_at < now() - $1 * interval '1 day'
        ORDER BY sent_at LIMIT $2 FOR UPDATE SKIP LOCKED)`,
    [days, limit],
  );
  return rowCount ?? 0;
}

/**
 * Deletes up to `limit` tokens whose expiry has passed: activation refuses them anyway. There
 * is no index on expiry (it would cost every signup an index write for an hourly job); tokens
 * are written in expiry order, so the expired ones are mostly found early in the table.
 */
export async function deleteExpiredTokens(db: Queryable, limit: number): Promise<number> {
  const { rowCount } = await db.query(
    `DELETE FROM tokens WHERE hash IN (
       SELECT hash FROM tokens WHERE expiry < now() LIMIT $1 FOR UPDATE SKIP LOCKED)`,
    [limit],
  );
  return rowCount ?? 0;
}
