// The signup transaction: the user, the hash of their activation token and their welcome
// email's outbox row, written together or not at all (no dual writes). It is one statement
// of data-modifying CTEs, so it is atomic like BEGIN…COMMIT while costing one round trip
// instead of five: this is the hot path of every signup. One statement carries one signup
// or several (signup-writer.ts gathers those that wait for a connection at the same time).
import type { Queryable } from './pool.js';
import type { User } from './users.js';
import { ACTIVATION_SCOPE, insertTokensFrom } from './tokens.js';
import type { Lease } from '../mail/leases.js';

export class EmailTakenError extends Error {
  constructor() {
    super('a user with this email address already exists');
    this.name = 'EmailTakenError';
  }
}

export interface NewSignup {
  readonly name: string;
  readonly email: string;
  readonly passwordHash: string;
  readonly tokenHash: Buffer;
  readonly tokenTtlMs: number;
  /**
   * Set when this instance will dispatch the email itself right after COMMIT: the row is
   * born leased to it (`sending`), so no sweeper can take it meanwhile. Unset (the pool is
   * saturated): the row is born `pending` and a sweeper sends it.
   */
  readonly lease?: Lease;
}

export interface SignupRecord {
  readonly user: User;
  readonly outboxId: number;
  /** The lease generation of a row born leased (1); 0 for a row born pending. */
  readonly generation: number;
}

/**
 * Writes signups in one statement (one commit): each gets its record, or EmailTakenError when
 * its address is taken, by an existing user or by an earlier signup of the same list (the
 * addresses compare case-insensitively, like the column). Rows are inserted in address order,
 * so two statements that race for the same addresses wait for each other instead of deadlocking.
 */
export async function insertSignups(db: Queryable, signups: readonly NewSignup[]): Promise<(SignupRecord | EmailTakenError)[]> {
  const { rows } = await db.query<User & { ord: number; outbox_id: number }>({
    name: 'insert-signups',
    text: `WITH input AS (
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::float8[], $6::text[], $7::float8[])
                WITH ORDINALITY AS i(name, email, password_hash, token_hash, token_ttl_ms, lease_owner, lease_ms, ord)
     ), first_of_each_address AS (
       SELECT DISTINCT ON (email::citext) * FROM input ORDER BY email::citext, ord
     ), new_user AS (
       INSERT INTO users (name, email, password_hash)
       SELECT name, email, password_hash FROM first_of_each_address ORDER BY email::citext
       ON CONFLICT (email) DO NOTHING
       RETURNING id, created_at, name, email::text AS email, activated, version
     ), inserted AS (
       SELECT new_user.*, f.ord, f.token_hash, f.token_ttl_ms, f.lease_owner, f.lease_ms
         FROM new_user JOIN first_of_each_address f ON f.email::citext = new_user.email::citext
     ), token AS (
       ${insertTokensFrom(`SELECT token_hash, id, token_ttl_ms, '${ACTIVATION_SCOPE}'::text FROM inserted`)}
     ), outbox AS (
       INSERT INTO email_outbox (user_id, template, status, lease_owner, lease_generation, lease_expires_at)
       SELECT id, 'welcome',
              CASE WHEN lease_owner IS NULL THEN 'pending' ELSE 'sending' END,
              lease_owner,
              CASE WHEN lease_owner IS NULL THEN 0 ELSE 1 END,
              CASE WHEN lease_owner IS NULL THEN NULL ELSE now() + lease_ms * interval '1 millisecond' END
         FROM inserted
       RETURNING id, user_id
     )
     SELECT inserted.id, inserted.created_at, inserted.name, inserted.email, inserted.activated, inserted.version,
            inserted.ord, outbox.id AS outbox_id
       FROM inserted JOIN outbox ON outbox.user_id = inserted.id`,
    values: [
      signups.map((s) => s.name),
      signups.map((s) => s.email),
      signups.map((s) => s.passwordHash),
      signups.map((s) => s.tokenHash),
      signups.map((s) => s.tokenTtlMs),
      signups.map((s) => s.lease?.owner ?? null),
      signups.map((s) => s.lease?.ms ?? 0),
    ],
  });
  const byPosition = new Map(rows.map(({ ord, outbox_id: outboxId, ...user }) => [Number(ord), { user, outboxId }]));
  return signups.map((signup, index) => {
    const written = byPosition.get(index + 1);
    return written ? { ...written, generation: signup.lease ? 1 : 0 } : new EmailTakenError();
  });
}

/** One signup on its own (the benchmarks' variants): its record, or EmailTakenError thrown. */
export async function insertSignup(db: Queryable, signup: NewSignup): Promise<SignupRecord> {
  const [outcome] = await insertSignups(db, [signup]);
  if (outcome instanceof EmailTakenError) throw outcome;
  return outcome!;
}
