-- Up Migration
-- citext makes the unique index on email case-insensitive, as Greenlight's schema does.
CREATE EXTENSION IF NOT EXISTS citext;

CREATE TABLE users (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    name text NOT NULL,
    email citext NOT NULL,
    password_hash text NOT NULL,
    activated boolean NOT NULL DEFAULT false,
    version integer NOT NULL DEFAULT 1,
    CONSTRAINT users_email_key UNIQUE (email)
);
