-- Up Migration
-- When a row last changed state: when a `dead` row died (what `npm run outbox -- list` shows
-- and what `purge --older-than` measures), or when it was requeued. The statements that change
-- a row's status set it (a trigger would also fire on every lease renewal, for nothing). Rows
-- that existed before this migration get the migration's time: a purge then waits longer for
-- them, never less (backfilling from other columns would rewrite the whole table).
ALTER TABLE email_outbox ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

-- Retention deletes old `sent` rows in small batches, oldest first; without this index each
-- batch would scan every row. Partial: only `sent` rows are in it.
CREATE INDEX email_outbox_sent_at_idx ON email_outbox (sent_at) WHERE status = 'sent';
