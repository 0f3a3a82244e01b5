-- Up Migration
-- The welcome email is rendered from the user row and a fresh token; nothing ever read this.
ALTER TABLE email_outbox DROP COLUMN payload;
