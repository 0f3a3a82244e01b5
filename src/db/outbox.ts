// Queries on email_outbox. Each takes its client first. The lease rules are described in
// src/mail/leases.ts.
import type { Lease } from '../mail/leases.js';
import type { Queryable } from './pool.js';

export interface ClaimedRow {
  readonly outboxId: number;
  readonly userId: number;
  readonly name: string;
  readonly email: string;
  readonly attempts: number;
}

/**
 * Claims up to `limit` due rows for `owner`: pending rows whose time has come, and sending
 * rows whose lease expired (their instance died). SKIP LOCKED lets several instances sweep at
 * once without waiting on each other or taking the same row. FOR UPDATE is not allowed
 * under UNION, hence one locking CTE per scan.
 */
export async function claimDue(db: Queryable, lease: Lease, limit: number): Promise<ClaimedRow[]> {
  const { rows } = await db.query<ClaimedRow>(
    `WITH pending AS (
       SELECT id FROM email_outbox
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
     ), expired AS (
       SELECT id FROM email_outbox
        WHERE status = 'sending' AND lease_expires_at <= now()
        ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
     ), due AS (
       SELECT id FROM pending UNION ALL SELECT id FROM expired LIMIT $2
     ), claimed AS (
       UPDATE email_outbox o
          SET status = 'sending', lease_owner = $1, attempts = o.attempts + 1,
              lease_expires_at = now() + $3 * interval '1 millisecond'
         FROM due WHERE o.id = due.id
       RETURNING o.id, o.user_id, o.attempts
     )
     SELECT c.id AS "outboxId", c.user_id AS "userId", u.name, u.email::text AS email, c.attempts
       FROM claimed c JOIN users u ON u.id = c.user_id
      ORDER BY c.id`,
    [lease.owner, limit, lease.ms],
  );
  return rows;
}

export interface Delivery {
  readonly outboxId: number;
  readonly messageId: string;
}

/** Marks delivered rows with the Message-ID the worker set. */
export async function markSent(db: Queryable, deliveries: readonly Delivery[]): Promise<void> {
  await db.query(
    `UPDATE email_outbox o
        SET status = 'sent', sent_at = now(), last_error = NULL, lease_owner = NULL, lease_expires_at = NULL,
            message_id = d.message_id
       FROM unnest($1::bigint[], $2::text[]) AS d(id, message_id)
      WHERE o.id = d.id AND o.status <> 'sent'`,
    [deliveries.map((d) => d.outboxId), deliveries.map((d) => d.messageId)],
  );
}

export interface Failure {
  readonly outboxId: number;
  readonly error: string;
  readonly retryable: boolean;
}

export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
}

export interface FailureOutcome {
  readonly outboxId: number;
  readonly status: 'pending' | 'dead';
  readonly attempts: number;
}

/**
 * Schedules a retry, or gives up. Backoff is computed in SQL: base * 2^(attempts-1), capped,
 * with jitter in [50 %, 100 %] so rows that failed together do not retry together.
 */
export async function markFailed(db: Queryable, failures: readonly Failure[], policy: RetryPolicy): Promise<FailureOutcome[]> {
  const { rows } = await db.query<FailureOutcome>(
    `UPDATE email_outbox o
        SET status = CASE WHEN f.retryable AND o.attempts < $4 THEN 'pending' ELSE 'dead' END,
            next_attempt_at = now() + least($6::float8, $5::float8 * power(2, greatest(o.attempts - 1, 0)))
                                     * (0.5 + random() / 2) * interval '1 millisecond',
            last_error = f.error, lease_owner = NULL, lease_expires_at = NULL
       FROM unnest($1::bigint[], $2::text[], $3::boolean[]) AS f(id, error, retryable)
      WHERE o.id = f.id AND o.status = 'sending'
      RETURNING o.id AS "outboxId", o.status, o.attempts`,
    [
      failures.map((f) => f.outboxId),
      failures.map((f) => f.error),
      failures.map((f) => f.retryable),
      policy.maxAttempts,
      policy.retryBaseMs,
      policy.retryMaxMs,
    ],
  );
  return rows;
}

/**
 * Hands rows leased to `owner` back to the outbox, due now, so the next instance sends them at
 * once instead of waiting for the lease to expire. Used at the shutdown deadline and when a
 * leased row could not be dispatched.
 */
export async function release(db: Queryable, owner: string, outboxIds?: readonly number[]): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE email_outbox
        SET status = 'pending', next_attempt_at = now(), lease_owner = NULL, lease_expires_at = NULL
      WHERE status = 'sending' AND lease_owner = $1 AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))`,
    [owner, outboxIds ?? null],
  );
  return rowCount ?? 0;
}

export interface OutboxCounts {
  readonly pending: number;
  readonly sending: number;
  readonly dead: number;
}

export async function countByStatus(db: Queryable): Promise<OutboxCounts> {
  const { rows } = await db.query<{ status: keyof OutboxCounts; n: number }>(
    "SELECT status, count(*)::int AS n FROM email_outbox WHERE status <> 'sent' GROUP BY status",
  );
  const counts = { pending: 0, sending: 0, dead: 0 };
  for (const row of rows) counts[row.status] = row.n;
  return counts;
}
