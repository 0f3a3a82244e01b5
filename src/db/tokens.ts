// Queries on tokens. Each takes its client first.
import type { Queryable } from './pool.js';

export const ACTIVATION_SCOPE = 'activation';

export interface NewToken {
  readonly hash: Buffer;
  readonly userId: number;
  readonly ttlMs: number;
}

/**
 * The one INSERT of tokens, shared by the signup statement and insertMany: `rows` is any
 * query yielding (hash, user_id, ttl_ms, scope), so both compute the expiry the same way.
 */
export function insertTokensFrom(rows: string): string {
  return `INSERT INTO tokens (hash, user_id, expiry, scope)
          SELECT t.hash, t.user_id, now() + t.ttl_ms * interval '1 millisecond', t.scope
            FROM (${rows}) AS t(hash, user_id, ttl_ms, scope)`;
}

/** Many tokens in one statement: the sweeper issues a fresh token for each email it resends. */
export async function insertMany(db: Queryable, scope: string, tokens: readonly NewToken[]): Promise<void> {
  if (tokens.length === 0) return;
  await db.query(
    insertTokensFrom('SELECT hash, user_id, ttl_ms, $4::text FROM unnest($1::bytea[], $2::bigint[], $3::float8[]) AS u(hash, user_id, ttl_ms)'),
    [tokens.map((t) => t.hash), tokens.map((t) => t.userId), tokens.map((t) => t.ttlMs), scope],
  );
}

export async function deleteAllForUser(db: Queryable, scope: string, userId: number): Promise<void> {
  await db.query('DELETE FROM tokens WHERE scope = $1 AND user_id = $2', [scope, userId]);
}
