// Queries on email_outbox. Each takes its client first. The lease rules are described in
// src/mail/leases.ts: every write about a leased row names the owner and the lease generation
// it holds, so a stale instance's write matches nothing. A row has an owner exactly while it
// is `sending` (a constraint, migration 008), so those writes find their rows by primary key
// (`id = ANY`, which the planner takes even before the table's first ANALYZE) and lease alone,
// never by scanning every sending row. The hot statements are named: each
// connection prepares them once, and PostgreSQL stops parsing and planning them per call.
import type { Lease } from '../mail/leases.js';
import type { Queryable } from './pool.js';

export interface ClaimedRow {
  readonly outboxId: number;
  readonly generation: number;
  readonly userId: number;
  readonly name: string;
  readonly email: string;
}

/** A row this instance holds: its id and the generation of its lease. */
export interface HeldRow {
  readonly outboxId: number;
  readonly generation: number;
}

/**
 * Claims up to `limit` due rows for `lease.owner`: pending rows whose time has come, and
 * sending rows whose lease expired (their instance died or lost touch). SKIP LOCKED lets
 * several instances sweep at once without waiting on each other or taking the same row. FOR
 * UPDATE is not allowed under UNION, hence one locking CTE per scan. A claim is not an
 * attempt: `attempts` is left alone.
 */
export async function claimDue(db: Queryable, lease: Lease, limit: number): Promise<ClaimedRow[]> {
  const { rows } = await db.query<ClaimedRow>({
    name: 'outbox-claim-due',
    text: `WITH pending AS (
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
          SET status = 'sending', lease_owner = $1, lease_generation = o.lease_generation + 1,
              lease_expires_at = now() + $3 * interval '1 millisecond'
         FROM due WHERE o.id = due.id
       RETURNING o.id, o.user_id, o.lease_generation
     )
     SELECT c.id AS "outboxId", c.lease_generation AS generation, c.user_id AS "userId", u.name, u.email::text AS email
       FROM claimed c JOIN users u ON u.id = c.user_id
      ORDER BY c.id`,
    values: [lease.owner, limit, lease.ms],
  });
  return rows;
}

/**
 * The heartbeat: extends the lease of every row this instance still holds, in one statement.
 * Returns the ids renewed; a held row missing from the answer was taken over (or finished).
 */
export async function renewLeases(db: Queryable, lease: Lease, held: readonly HeldRow[]): Promise<Set<number>> {
  if (held.length === 0) return new Set();
  const { rows } = await db.query<{ id: number }>({
    name: 'outbox-renew-leases',
    text: `UPDATE email_outbox o SET lease_expires_at = now() + $2 * interval '1 millisecond'
       FROM unnest($3::bigint[], $4::bigint[]) AS h(id, generation)
      WHERE o.id = ANY($3::bigint[]) AND o.id = h.id AND o.lease_owner = $1 AND o.lease_generation = h.generation
      RETURNING o.id`,
    values: [lease.owner, lease.ms, held.map((h) => h.outboxId), held.map((h) => h.generation)],
  });
  return new Set(rows.map((row) => row.id));
}

export interface Delivery extends HeldRow {
  readonly messageId: string;
}

/** Marks delivered rows, with the Message-ID the worker set. Returns the ids written (the others were stale). */
export async function markSent(db: Queryable, owner: string, deliveries: readonly Delivery[]): Promise<Set<number>> {
  const { rows } = await db.query<{ id: number }>({
    name: 'outbox-mark-sent',
    text: `UPDATE email_outbox o
        SET status = 'sent', sent_at = now(), updated_at = now(), attempts = o.attempts + 1, last_error = NULL,
            lease_owner = NULL, lease_expires_at = NULL, message_id = d.message_id
       FROM unnest($2::bigint[], $3::bigint[], $4::text[]) AS d(id, generation, message_id)
      WHERE o.id = ANY($2::bigint[]) AND o.id = d.id AND o.lease_owner = $1 AND o.lease_generation = d.generation
      RETURNING o.id`,
    values: [owner, deliveries.map((d) => d.outboxId), deliveries.map((d) => d.generation), deliveries.map((d) => d.messageId)],
  });
  return new Set(rows.map((row) => row.id));
}

export interface Failure extends HeldRow {
  readonly error: string;
  /** Permanent for this email (a 5xx to RCPT TO or DATA): dead at once. */
  readonly permanent: boolean;
  /** The provider asked us to slow down: retried in a second or two, never dead for it. */
  readonly throttled: boolean;
}

export interface RetryPolicy {
  readonly retryBaseMs: number;
  readonly retryMaxMs: number;
  /** Age of an email at which a transient failure makes it dead. */
  readonly giveUpAfterMs: number;
  /** 0: no cap on attempts. */
  readonly maxAttempts: number;
}

export interface FailureOutcome {
  readonly outboxId: number;
  readonly status: 'pending' | 'dead';
  readonly attempts: number;
}

/**
 * Records a failed SMTP attempt: a retry, or `dead` when the failure is permanent or the email
 * has been retried for the give-up age (or past the optional attempt cap). Backoff is computed in
 * SQL: base * 2^(attempts before this one), capped, with jitter in [50 %, 100 %] so rows that
 * failed together do not retry together. Stale rows (taken over) are not written.
 */
export async function markFailed(db: Queryable, owner: string, failures: readonly Failure[], policy: RetryPolicy): Promise<FailureOutcome[]> {
  const { rows } = await db.query<FailureOutcome>({
    name: 'outbox-mark-failed',
    text: `UPDATE email_outbox o
        SET status = CASE WHEN f.throttled THEN 'pending'
                          WHEN f.permanent
                            OR o.retry_window_start + $8 * interval '1 millisecond' <= now()
                            OR ($9 > 0 AND o.attempts + 1 >= $9) THEN 'dead' ELSE 'pending' END,
            attempts = o.attempts + 1, updated_at = now(),
            next_attempt_at = now() + CASE WHEN f.throttled THEN 1000 + random() * 1000
                                           ELSE least($7::float8, $6::float8 * power(2, least(o.attempts, 30))) * (0.5 + random() / 2)
                                      END * interval '1 millisecond',
            last_error = f.error, lease_owner = NULL, lease_expires_at = NULL
       FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::boolean[], $10::boolean[]) AS f(id, generation, error, permanent, throttled)
      WHERE o.id = ANY($2::bigint[]) AND o.id = f.id AND o.lease_owner = $1 AND o.lease_generation = f.generation
      RETURNING o.id AS "outboxId", o.status, o.attempts`,
    values: [
      owner,
      failures.map((f) => f.outboxId),
      failures.map((f) => f.generation),
      failures.map((f) => f.error),
      failures.map((f) => f.permanent),
      policy.retryBaseMs,
      policy.retryMaxMs,
      policy.giveUpAfterMs,
      policy.maxAttempts,
      failures.map((f) => f.throttled),
    ],
  });
  return rows;
}

/**
 * Hands held rows back to the outbox, due now (or at `dueInMs`), attempts unchanged: the
 * next instance (or this one) sends them without waiting for the lease to expire. Used when
 * shutdown begins, at the deadline, when the breaker pauses sending and when a claimed row
 * could not be dispatched. Returns how many rows it moved.
 */
export async function release(db: Queryable, owner: string, held: readonly HeldRow[], dueInMs = 0): Promise<number> {
  if (held.length === 0) return 0;
  const { rowCount } = await db.query({
    name: 'outbox-release',
    text: `UPDATE email_outbox o
        SET status = 'pending', next_attempt_at = now() + $4 * interval '1 millisecond', updated_at = now(),
            lease_owner = NULL, lease_expires_at = NULL
       FROM unnest($2::bigint[], $3::bigint[]) AS h(id, generation)
      WHERE o.id = ANY($2::bigint[]) AND o.id = h.id AND o.lease_owner = $1 AND o.lease_generation = h.generation`,
    values: [owner, held.map((h) => h.outboxId), held.map((h) => h.generation), dueInMs],
  });
  return rowCount ?? 0;
}

/**
 * A run of "permanent" refusals across different recipients was an account problem (a paused
 * or sandboxed sender), not bad addresses: the circuit breaker gives those emails back.
 */
export async function reviveDead(db: Queryable, outboxIds: readonly number[]): Promise<number> {
  if (outboxIds.length === 0) return 0;
  const { rowCount } = await db.query(
    `UPDATE email_outbox SET status = 'pending', next_attempt_at = now(), updated_at = now(), retry_window_start = now()
      WHERE id = ANY($1::bigint[]) AND status = 'dead'`,
    [outboxIds],
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
