-- Up Migration
-- Every email is first a row here, written in the same transaction as its user.
--   pending: due at next_attempt_at        sending: leased to lease_owner until lease_expires_at
--   sent:    delivered (sent_at, message_id) dead:  gave up (last_error says why)
CREATE TABLE email_outbox (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    template text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}',
    status text NOT NULL DEFAULT 'pending'
        CONSTRAINT email_outbox_status_check CHECK (status IN ('pending', 'sending', 'sent', 'dead')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner text,
    lease_expires_at timestamptz,
    last_error text,
    message_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz
);

-- The sweeper's two claim scans: pending rows that are due, and leases that have expired.
-- Partial indexes stay small however many sent rows accumulate.
CREATE INDEX email_outbox_pending_due_idx ON email_outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX email_outbox_sending_lease_idx ON email_outbox (lease_expires_at) WHERE status = 'sending';
CREATE INDEX email_outbox_user_id_idx ON email_outbox (user_id);
-- The metrics' counts of unfinished and dead rows, without scanning every sent row.
CREATE INDEX email_outbox_unsent_idx ON email_outbox (status) WHERE status <> 'sent';
