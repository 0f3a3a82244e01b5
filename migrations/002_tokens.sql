-- Up Migration
-- Only the SHA-256 of a token is stored: a copy of the database does not activate anyone.
CREATE TABLE tokens (
    hash bytea PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    expiry timestamptz NOT NULL,
    scope text NOT NULL
);

CREATE INDEX tokens_user_id_scope_idx ON tokens (user_id, scope);
