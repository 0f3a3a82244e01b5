// Users with a pending welcome email, written straight to the database: what a crashed
// instance leaves behind, a backlog for the sweeper, or rows the API would refuse (a name with
// CR/LF). The service's own signup path is not involved.
import type pg from 'pg';

export interface PendingEmail {
  readonly userId: number;
  readonly outboxId: number;
  readonly email: string;
}

export interface NewUser {
  readonly name: string;
  readonly email: string;
}

/** Inserts the users and one pending welcome email each, in one statement; returns them in order. */
export async function insertPendingEmails(db: Pick<pg.Pool, 'query'>, users: readonly NewUser[]): Promise<PendingEmail[]> {
  const { rows } = await db.query<{ user_id: string; outbox_id: string; email: string }>(
    `WITH new_users AS (
       INSERT INTO users (name, email, password_hash)
       SELECT name, email, 'not-a-hash' FROM unnest($1::text[], $2::text[]) AS u (name, email)
       RETURNING id, email::text AS email
     ), new_rows AS (
       INSERT INTO email_outbox (user_id, template) SELECT id, 'welcome' FROM new_users
       RETURNING id, user_id
     )
     SELECT u.id AS user_id, r.id AS outbox_id, u.email FROM new_rows r JOIN new_users u ON u.id = r.user_id`,
    [users.map((user) => user.name), users.map((user) => user.email)],
  );
  const byEmail = new Map(rows.map((row) => [row.email, row]));
  return users.map((user) => {
    const row = byEmail.get(user.email)!;
    return { userId: Number(row.user_id), outboxId: Number(row.outbox_id), email: row.email };
  });
}

/** One pending welcome email for one user. */
export async function insertPendingEmail(db: Pick<pg.Pool, 'query'>, name: string, email: string): Promise<PendingEmail> {
  const [inserted] = await insertPendingEmails(db, [{ name, email }]);
  return inserted!;
}

/** `count` users named "`name` i" at `prefix`-i@example.com. */
export function numberedUsers(prefix: string, count: number, name = 'Pending User'): NewUser[] {
  return Array.from({ length: count }, (_, i) => ({ name: `${name} ${i + 1}`, email: `${prefix}-${i + 1}@example.com` }));
}
