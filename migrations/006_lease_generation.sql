-- Up Migration
-- Fencing: every lease (a row born leased, or a claim) gets the next generation, and every
-- result write and release names the generation it holds. A write from an instance whose
-- lease expired and was taken over (even by itself, later) matches no row and changes nothing.
-- attempts now counts real SMTP attempts only: a claim no longer adds one.
ALTER TABLE email_outbox ADD COLUMN lease_generation bigint NOT NULL DEFAULT 0;

-- Giving up is by age: a transiently failing email becomes dead once it has been retried for
-- MAIL_GIVE_UP_AFTER_MS since this moment, which is its creation, or the moment an operator
-- (or the circuit breaker) put it back in the queue, so a requeued email gets a full window.
ALTER TABLE email_outbox ADD COLUMN retry_window_start timestamptz;
UPDATE email_outbox SET retry_window_start = created_at;
ALTER TABLE email_outbox ALTER COLUMN retry_window_start SET DEFAULT now(), ALTER COLUMN retry_window_start SET NOT NULL;
