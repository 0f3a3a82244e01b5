-- Up Migration
-- Fencing: every lease (a row born leased, or a claim) gets the next generation, and every
-- result write and release names the generation it holds. A write from an instance whose
-- lease expired and was taken over (even by itself, later) matches no row and changes nothing.
-- attempts now counts real SMTP attempts only: a claim no longer adds one.
ALTER TABLE email_outbox ADD COLUMN lease_generation bigint NOT NULL DEFAULT 0;
