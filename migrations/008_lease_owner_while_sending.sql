-- Up Migration
-- A row has a lease owner exactly while it is `sending`: every statement that moves a row out
-- of `sending` clears the owner, and every one that moves it in sets it. The constraint makes
-- that a rule the database keeps, so the result writes can find their rows by primary key and
-- lease (owner, generation) alone: a condition on `status` lets the planner scan the whole
-- partial index of sending rows (thousands during a backlog) for every batch it writes.
UPDATE email_outbox SET lease_owner = NULL, lease_expires_at = NULL WHERE status <> 'sending' AND lease_owner IS NOT NULL;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_lease_owner_while_sending
    CHECK ((status = 'sending') = (lease_owner IS NOT NULL));
