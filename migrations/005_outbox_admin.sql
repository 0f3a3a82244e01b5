-- Up Migration
-- When a row last changed: when a `dead` row died (what `npm run outbox -- list` shows and
-- what `purge --older-than` measures), or when it was requeued. A trigger keeps it, so every
-- UPDATE of the outbox, present or future, counts without having to remember it. Rows that
-- existed before this migration get the migration's time: a purge then waits longer for
-- them, never less (backfilling from other columns would rewrite the whole table).
ALTER TABLE email_outbox ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

CREATE FUNCTION email_outbox_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER email_outbox_touch BEFORE UPDATE ON email_outbox
    FOR EACH ROW EXECUTE FUNCTION email_outbox_touch();

-- Retention deletes old `sent` rows in small batches, oldest first; without this index each
-- batch would scan every row. Partial: only `sent` rows are in it.
CREATE INDEX email_outbox_sent_at_idx ON email_outbox (sent_at) WHERE status = 'sent';
