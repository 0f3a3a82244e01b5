-- Up Migration
-- The provider's send-rate quota, shared by every instance on this database: one token bucket
-- in one row. Instances take permits in small batches with one UPDATE each, so the bucket is
-- refilled and debited atomically, whatever the number of instances.
--   rate:            MAIL_RATE_PER_SECOND as configured (0: unlimited), set at boot
--   effective_rate:  what everyone sends at now; lowered on throttling replies, recovering
--                    additively back to `rate` (NULL: unlimited)
--   ceiling_rate:    where recovery stops: `rate`, or with no rate configured twice the rate
--                    the provider accepted when it first throttled (reaching it means unlimited)
--   recovery_per_second: how much effective_rate grows each second after a decrease
--   tokens:          permits in the bucket at refilled_at (at most BUCKET_SECONDS of the rate, src/db/send-quota.ts)
CREATE TABLE send_quota (
    id boolean PRIMARY KEY DEFAULT true CONSTRAINT send_quota_one_row CHECK (id),
    rate float8 NOT NULL DEFAULT 0,
    effective_rate float8,
    ceiling_rate float8,
    recovery_per_second float8 NOT NULL DEFAULT 0,
    tokens float8 NOT NULL DEFAULT 0,
    refilled_at timestamptz NOT NULL DEFAULT now(),
    throttled_at timestamptz
);
INSERT INTO send_quota DEFAULT VALUES;
