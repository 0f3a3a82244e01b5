// The signup transaction: the user, the hash of their activation token and their welcome
// email's outbox row, written together or not at all (no dual writes). It is one statement
// of data-modifying CTEs, so it is atomic like BEGIN…COMMIT while costing one round trip
// instead of five: this is the hot path of every signup.
import type { Queryable } from './pool.js';
import type { User } from './users.js';
import { SQLSTATE } from './sqlstate.js';
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

export async function insertSignup(db: Queryable, signup: NewSignup): Promise<SignupRecord> {
  try {
    const { rows } = await db.query<User & { outbox_id: number }>({
      name: 'insert-signup',
      text: `WITH new_user AS (
         INSERT INTO users (name, email, password_hash) VALUES ($1, $2, $3)
         RETURNING id, created_at, name, email::text AS email, activated, version
       ), token AS (
         ${insertTokensFrom(`SELECT $4::bytea, id, $5::float8, '${ACTIVATION_SCOPE}'::text FROM new_user`)}
       ), outbox AS (
         INSERT INTO email_outbox (user_id, template, status, lease_owner, lease_generation, lease_expires_at)
         SELECT id, 'welcome',
                CASE WHEN $6::text IS NULL THEN 'pending' ELSE 'sending' END,
                $6::text,
                CASE WHEN $6::text IS NULL THEN 0 ELSE 1 END,
                CASE WHEN $6::text IS NULL THEN NULL ELSE now() + $7 * interval '1 millisecond' END
           FROM new_user
         RETURNING id
       )
       SELECT new_user.*, outbox.id AS outbox_id FROM new_user, outbox`,
      values: [signup.name, signup.email, signup.passwordHash, signup.tokenHash, signup.tokenTtlMs, signup.lease?.owner ?? null, signup.lease?.ms ?? 0],
    });
    const { outbox_id: outboxId, ...user } = rows[0]!;
    return { user, outboxId, generation: signup.lease ? 1 : 0 };
  } catch (error) {
    // By SQLSTATE and constraint name, never by message text.
    const { code, constraint } = error as { code?: string; constraint?: string };
    if (code === SQLSTATE.uniqueViolation && constraint === 'users_email_key') throw new EmailTakenError();
    throw error;
  }
}
