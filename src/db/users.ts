// Queries on users (and the activation that deletes its tokens). Each takes its client first.
import type { Queryable } from './pool.js';

export interface User {
  readonly id: number;
  readonly created_at: Date;
  readonly name: string;
  readonly email: string;
  readonly activated: boolean;
  readonly version: number;
}

const USER_COLUMNS = 'id, created_at, name, email::text AS email, activated, version';

/** The user holding an unexpired token of `scope` with this hash, if any. */
export async function getForToken(db: Queryable, scope: string, tokenHash: Buffer): Promise<User | undefined> {
  const { rows } = await db.query<User>(
    `SELECT ${USER_COLUMNS}
       FROM users WHERE id = (SELECT user_id FROM tokens
                               WHERE hash = $1 AND scope = $2 AND expiry > now())`,
    [tokenHash, scope],
  );
  return rows[0];
}

/**
 * Activates the user at the version that was read (optimistic locking, as Greenlight's
 * Update does). Undefined means somebody changed the row in between: an edit conflict.
 */
export async function activate(db: Queryable, user: User): Promise<User | undefined> {
  const { rows } = await db.query<User>(
    `UPDATE users SET activated = true, version = version + 1
      WHERE id = $1 AND version = $2
      RETURNING ${USER_COLUMNS}`,
    [user.id, user.version],
  );
  return rows[0];
}
