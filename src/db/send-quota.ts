// Queries on send_quota: one row, a token bucket shared by every instance (see
// migrations/007_send_quota.sql). Each statement reads and writes the row under its lock, so
// instances never hand out the same permit twice.
import type { Queryable } from './pool.js';

/**
 * The bucket holds at most this many seconds of the effective rate (and at least one permit).
 * An instance asks at most every 25 ms and then waits for the answer, which a loaded database
 * can make as long again: the bucket holds what flows in meanwhile with room to spare, so the
 * cap does not throw away permits one instance alone needs to keep the rate. A burst after an
 * idle spell stays within 10 % of the rate.
 */
const BUCKET_SECONDS = 0.1;
/** A throttling reply halves the rate at most once per this many seconds, however many arrive. */
const DECREASE_EVERY_SECONDS = 1;
/**
 * Permits flow at this share of the effective rate: emails leave a few milliseconds after their
 * permit (the pool, a busy core), so a little headroom keeps every one-second window at the
 * provider under the quota.
 */
const HEADROOM = 0.95;
/** Recovery adds this share of the ceiling per second (from half to full in about ten seconds). */
const RECOVERY_SHARE = 0.05;

export interface Grant {
  readonly granted: number;
  /** Permits per second everyone sends at now; null: unlimited. */
  readonly effectiveRate: number | null;
  /** Fraction of a permit left in the bucket (to compute when the next one is due). */
  readonly left: number;
}

/** At boot: a different configured rate replaces the row's state; the same one leaves it alone. */
export async function configureQuota(db: Queryable, rate: number): Promise<void> {
  await db.query(
    `UPDATE send_quota
        SET rate = $1, effective_rate = CASE WHEN $1 > 0 THEN $1 END, ceiling_rate = CASE WHEN $1 > 0 THEN $1 END,
            recovery_per_second = 0, tokens = 0, refilled_at = now(), throttled_at = NULL
      WHERE rate IS DISTINCT FROM $1`,
    [rate],
  );
}

/**
 * Takes up to `want` permits: refills the bucket for the time since the last statement, grows
 * a lowered rate back toward its ceiling, and debits what it grants. With the rate unlimited it
 * grants everything and changes nothing.
 */
export async function takePermits(db: Queryable, want: number): Promise<Grant> {
  const { rows } = await db.query<Grant>(
    `WITH q AS (
       SELECT *, greatest(0, extract(epoch FROM now() - refilled_at)) AS elapsed FROM send_quota FOR UPDATE
     ), grown AS (
       SELECT q.*, CASE WHEN effective_rate IS NULL THEN NULL
                        WHEN rate = 0 AND effective_rate + recovery_per_second * elapsed >= ceiling_rate THEN NULL
                        ELSE least(ceiling_rate, effective_rate + recovery_per_second * elapsed) END AS eff
         FROM q
     ), bucket AS (
       SELECT grown.*, least(greatest(1, eff * $2), tokens + eff * $3 * elapsed) AS available FROM grown
     ), granted AS (
       SELECT bucket.*, CASE WHEN eff IS NULL THEN $1 ELSE least(floor(available)::int, $1) END AS n FROM bucket
     )
     UPDATE send_quota s
        SET effective_rate = g.eff, tokens = CASE WHEN g.eff IS NULL THEN 0 ELSE g.available - g.n END, refilled_at = now()
       FROM granted g
     RETURNING g.n AS granted, g.eff AS "effectiveRate", CASE WHEN g.eff IS NULL THEN 0 ELSE g.available - g.n END AS left`,
    [want, BUCKET_SECONDS, HEADROOM],
  );
  return rows[0]!;
}

/** The shared rate as it stands (cheap: an unlimited instance polls it to learn of throttling elsewhere). */
export async function readEffectiveRate(db: Queryable): Promise<number | null> {
  const { rows } = await db.query<{ effectiveRate: number | null }>('SELECT effective_rate AS "effectiveRate" FROM send_quota');
  return rows[0]?.effectiveRate ?? null;
}

/**
 * A throttling reply: halve everyone's rate (at most once a second). With no rate configured,
 * the starting point is what the provider accepted over the last second.
 */
export async function throttleQuota(db: Queryable): Promise<number | null> {
  const { rows } = await db.query<{ effectiveRate: number | null }>(
    `WITH accepted AS (
       SELECT count(*)::float8 AS per_second FROM email_outbox WHERE status = 'sent' AND sent_at > now() - interval '1 second'
     )
     UPDATE send_quota s
        SET effective_rate = greatest(1, coalesce(s.effective_rate, a.per_second) / 2),
            ceiling_rate = CASE WHEN s.rate > 0 THEN s.rate ELSE coalesce(s.ceiling_rate, greatest(2, a.per_second * 2)) END,
            recovery_per_second = greatest(0.5, $1 * CASE WHEN s.rate > 0 THEN s.rate ELSE coalesce(s.ceiling_rate, greatest(2, a.per_second * 2)) END),
            tokens = 0, refilled_at = now(), throttled_at = now()
       FROM accepted a
      WHERE s.throttled_at IS NULL OR s.throttled_at < now() - $2 * interval '1 second'
     RETURNING s.effective_rate AS "effectiveRate"`,
    [RECOVERY_SHARE, DECREASE_EVERY_SECONDS],
  );
  return rows[0]?.effectiveRate ?? (await readEffectiveRate(db));
}
