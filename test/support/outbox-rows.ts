// Outbox rows and tokens written straight to the database, in any state and of any age, for
// the tests of the operator's tools and of retention. Ages are in days before now().
import { randomBytes } from 'node:crypto';
import type { Queryable } from '../../src/db/pool.js';
import type { OutboxStatus } from '../../src/db/outbox-admin.js';
import { uniqueEmail } from './env.js';

export interface SeedEmail {
  readonly status: OutboxStatus;
  readonly email?: string;
  /** created_at; also updated_at and sent_at unless those are given. */
  readonly ageDays?: number;
  readonly updatedDaysAgo?: number;
  readonly sentDaysAgo?: number;
  readonly attempts?: number;
  readonly lastError?: string;
}

export interface SeededEmail {
  readonly outboxId: number;
  readonly userId: number;
  readonly email: string;
}

export async function seedEmail(db: Queryable, seed: SeedEmail): Promise<SeededEmail> {
  const email = seed.email ?? uniqueEmail(seed.status);
  const age = seed.ageDays ?? 0;
  const { rows } = await db.query<{ outboxId: number; userId: number }>(
    `WITH u AS (
       INSERT INTO users (name, email, password_hash, created_at) VALUES ('Seed', $1::text, 'not-a-hash', now() - $3::float8 * interval '1 day') RETURNING id
     )
     INSERT INTO email_outbox (user_id, template, status, attempts, last_error, created_at, updated_at, next_attempt_at,
                               sent_at, message_id, lease_owner, lease_expires_at)
     SELECT u.id, 'welcome', $2::text, $6::int, $7::text,
            now() - $3::float8 * interval '1 day', now() - $4::float8 * interval '1 day', now() - $3::float8 * interval '1 day',
            CASE WHEN $2::text = 'sent' THEN now() - $5::float8 * interval '1 day' END,
            CASE WHEN $2::text = 'sent' THEN '<seeded@localhost>' END,
            CASE WHEN $2::text = 'sending' THEN 'another-instance' END,
            CASE WHEN $2::text = 'sending' THEN now() + interval '1 hour' END
       FROM u
     RETURNING id AS "outboxId", user_id AS "userId"`,
    [email, seed.status, age, seed.updatedDaysAgo ?? age, seed.sentDaysAgo ?? age, seed.attempts ?? (seed.status === 'pending' ? 0 : 1), seed.lastError ?? null],
  );
  return { ...rows[0]!, email };
}

/** A token of a user, expiring `expiresInDays` from now (negative: expired that long ago). */
export async function seedToken(db: Queryable, userId: number, expiresInDays: number): Promise<Buffer> {
  const hash = randomBytes(32);
  await db.query("INSERT INTO tokens (hash, user_id, expiry, scope) VALUES ($1, $2, now() + $3::float8 * interval '1 day', 'activation')", [hash, userId, expiresInDays]);
  return hash;
}

export async function outboxIds(db: Queryable): Promise<number[]> {
  const { rows } = await db.query<{ id: number }>('SELECT id FROM email_outbox ORDER BY id');
  return rows.map((row) => row.id);
}

export async function tokenHashes(db: Queryable): Promise<string[]> {
  const { rows } = await db.query<{ hash: Buffer }>('SELECT hash FROM tokens ORDER BY hash');
  return rows.map((row) => row.hash.toString('hex'));
}
