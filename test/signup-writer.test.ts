// Group commit for signups, against a real PostgreSQL: signups that wait for a busy
// connection share one statement, each still gets its own answer, and a statement that fails
// writes none of the signups it carried. A signup that would go alone waits, briefly, for
// one that is due within the hold.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
// Resolves after the event loop has gone round once: timers and I/O have had their turn.
import { setImmediate as loopTurn } from 'node:timers/promises';
import { runMigrations } from '../src/db/migrations.js';
import type { Queryable } from '../src/db/pool.js';
import { SignupWriter } from '../src/db/signup-writer.js';
import { EmailTakenError, type NewSignup, type SignupRecord } from '../src/db/signups.js';
import { createLogger } from '../src/logger.js';
import { generateToken } from '../src/tokens.js';
import { createTestDatabase, file, uniqueEmail, type Database } from './support/index.js';

let db: Database;

before(async () => {
  db = await createTestDatabase(file);
  await runMigrations(db.url, createLogger('warn'));
});

function newSignup(email: string, extra: Partial<NewSignup> = {}): NewSignup {
  return { name: 'Writer Test', email, passwordHash: 'not-a-real-hash', tokenHash: generateToken().hash, tokenTtlMs: 60_000, ...extra };
}

/** The test database, counting the statements sent through it. */
function countingDb(): Queryable & { statements: number } {
  const counting = {
    statements: 0,
    query: ((...args: Parameters<Database['pool']['query']>) => {
      counting.statements += 1;
      return (db.pool.query as (...a: unknown[]) => unknown)(...args);
    }) as Queryable['query'],
  };
  return counting;
}

async function rowsFor(emails: readonly string[]) {
  const { rows } = await db.pool.query<{ email: string; users: number; tokens: number; outbox: number; status: string | null; lease_owner: string | null }>(
    `SELECT u.email::text AS email, count(DISTINCT u.id)::int AS users, count(DISTINCT t.hash)::int AS tokens, count(DISTINCT o.id)::int AS outbox,
            min(o.status) AS status, min(o.lease_owner) AS lease_owner
       FROM users u LEFT JOIN tokens t ON t.user_id = u.id LEFT JOIN email_outbox o ON o.user_id = u.id
      WHERE u.email = ANY($1::citext[]) GROUP BY u.email`,
    [emails],
  );
  return new Map(rows.map((row) => [row.email.toLowerCase(), row]));
}

test('signups that wait for a busy connection go out together in one statement, each with its own record', async () => {
  const counting = countingDb();
  const writer = new SignupWriter(counting, { maxConcurrentWrites: 1, maxSignupsPerWrite: 64 });
  const emails = Array.from({ length: 20 }, () => uniqueEmail('group'));
  const records = await Promise.all(emails.map((email) => writer.write(newSignup(email))));
  // The first finds the connection free and goes alone; the other 19 wait for it and share the next.
  assert.equal(counting.statements, 2);
  assert.deepEqual(records.map((r) => r.user.email), emails);
  assert.equal(new Set(records.map((r) => r.user.id)).size, 20);
  assert.equal(new Set(records.map((r) => r.outboxId)).size, 20);
  const rows = await rowsFor(emails);
  for (const email of emails) assert.deepEqual({ ...rows.get(email), email }, { email, users: 1, tokens: 1, outbox: 1, status: 'pending', lease_owner: null });
});

test('a signup that would go alone waits for the next one due within the hold, and the two share one statement', async () => {
  const counting = countingDb();
  const writer = new SignupWriter(counting, { maxConcurrentWrites: 6, maxSignupsPerWrite: 64, nextSignupDueInMs: () => 5, maxHoldMs: 60_000 });
  const [first, second] = [uniqueEmail('held'), uniqueEmail('companion')];
  const held = writer.write(newSignup(first));
  await loopTurn();
  assert.equal(counting.statements, 0, 'the first signup went without waiting');
  const records = await Promise.all([held, writer.write(newSignup(second))]);
  assert.equal(counting.statements, 1);
  assert.deepEqual(records.map((r) => r.user.email), [first, second]);
  assert.equal((await rowsFor([first, second])).size, 2);
});

test('a held signup goes alone when no companion comes within the hold', async () => {
  const counting = countingDb();
  const writer = new SignupWriter(counting, { maxConcurrentWrites: 6, maxSignupsPerWrite: 64, nextSignupDueInMs: () => 0, maxHoldMs: 50 });
  const started = performance.now();
  const record = await writer.write(newSignup(uniqueEmail('lonely')));
  // Node may fire a timer up to a millisecond early.
  assert.ok(performance.now() - started >= 49, `written after ${(performance.now() - started).toFixed(1)} ms, before the hold ended`);
  assert.equal(counting.statements, 1);
  assert.equal((await rowsFor([record.user.email])).size, 1);
});

test('a signup goes at once when nothing is due, when the next is due after the hold, or with no hold', async () => {
  for (const [nextSignupDueInMs, maxHoldMs] of [[() => undefined, 60_000], [() => 60_001, 60_000], [() => 0, undefined]] as const) {
    const counting = countingDb();
    const writer = new SignupWriter(counting, { maxConcurrentWrites: 6, maxSignupsPerWrite: 64, nextSignupDueInMs, ...(maxHoldMs ? { maxHoldMs } : {}) });
    const written = writer.write(newSignup(uniqueEmail('at-once')));
    assert.equal(counting.statements, 1, `held with the next due in ${nextSignupDueInMs()} ms and a hold of ${maxHoldMs} ms`);
    await written;
  }
});

test('a signup behind busy connections waits for one, not for a companion', async () => {
  const counting = countingDb();
  const writer = new SignupWriter(counting, { maxConcurrentWrites: 1, maxSignupsPerWrite: 64, nextSignupDueInMs: () => 0, maxHoldMs: 60_000 });
  // The first is held (the next is "due"); the second releases both, and both share a statement.
  const [a, b] = [writer.write(newSignup(uniqueEmail('pair'))), writer.write(newSignup(uniqueEmail('pair')))];
  assert.equal(counting.statements, 1);
  // The connection is busy: the third queues behind it, and goes when it frees, without a hold.
  const c = writer.write(newSignup(uniqueEmail('queued')));
  await Promise.all([a, b, c]);
  assert.equal(counting.statements, 2);
});

test('a taken address fails its own signup only: an existing user, or an earlier signup of the same statement in another case', async () => {
  const writer = new SignupWriter(db.pool, { maxConcurrentWrites: 1, maxSignupsPerWrite: 64 });
  const existing = uniqueEmail('taken');
  await writer.write(newSignup(existing));
  const [a, b] = [uniqueEmail('fresh'), uniqueEmail('fresh')];
  const lease = { owner: 'writer-test', ms: 60_000 };
  // The first write holds the only connection, so the four behind it share one statement.
  const holder = writer.write(newSignup(uniqueEmail('holder')));
  const outcomes = await Promise.allSettled([
    writer.write(newSignup(a, { lease })),
    writer.write(newSignup(existing.toUpperCase())),
    writer.write(newSignup(b)),
    writer.write(newSignup(a.toUpperCase(), { lease })),
  ]);
  await holder;
  assert.deepEqual(
    outcomes.map((o) => (o.status === 'fulfilled' ? o.value.user.email : (o.reason as Error).constructor.name)),
    [a, 'EmailTakenError', b, 'EmailTakenError'],
  );
  const leased = (outcomes[0] as PromiseFulfilledResult<SignupRecord>).value;
  assert.equal(leased.generation, 1);
  assert.equal((outcomes[2] as PromiseFulfilledResult<SignupRecord>).value.generation, 0);
  const rows = await rowsFor([a, b, existing]);
  assert.deepEqual(rows.get(a), { email: a, users: 1, tokens: 1, outbox: 1, status: 'sending', lease_owner: 'writer-test' });
  assert.deepEqual(rows.get(b), { email: b, users: 1, tokens: 1, outbox: 1, status: 'pending', lease_owner: null });
  assert.equal(rows.get(existing)?.users, 1);
});

test('a statement that fails writes none of its signups and rejects each with the database error', async () => {
  const writer = new SignupWriter(db.pool, { maxConcurrentWrites: 1, maxSignupsPerWrite: 64 });
  const holder = writer.write(newSignup(uniqueEmail('holder')));
  // Two signups with the same token hash: the tokens primary key refuses the second, and with
  // it the whole statement.
  const tokenHash = generateToken().hash;
  const emails = [uniqueEmail('doomed'), uniqueEmail('doomed'), uniqueEmail('doomed')];
  const outcomes = await Promise.allSettled([writer.write(newSignup(emails[0]!, { tokenHash })), writer.write(newSignup(emails[1]!)), writer.write(newSignup(emails[2]!, { tokenHash }))]);
  await holder;
  for (const outcome of outcomes) {
    assert.equal(outcome.status, 'rejected');
    assert.ok(!(outcome.reason instanceof EmailTakenError));
    assert.equal((outcome.reason as { code?: string }).code, '23505');
  }
  assert.equal((await rowsFor(emails)).size, 0, 'a signup of the failed statement was written');
});

test('two statements racing for the same addresses in opposite orders neither deadlock nor write an address twice', async () => {
  // Two writers, one connection each; behind a first signup each, 200 signups wait and go out
  // as one statement: the same addresses, one writer's forwards and the other's backwards.
  const writers = [0, 1].map(() => new SignupWriter(db.pool, { maxConcurrentWrites: 1, maxSignupsPerWrite: 200 }));
  const emails = Array.from({ length: 200 }, () => uniqueEmail('race'));
  const holders = writers.map((writer) => writer.write(newSignup(uniqueEmail('holder'))));
  const forwards = emails.map((email) => writers[0]!.write(newSignup(email)));
  const backwards = [...emails].reverse().map((email) => writers[1]!.write(newSignup(email)));
  const outcomes = await Promise.allSettled([...forwards, ...backwards]);
  await Promise.all(holders);
  const failures = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected');
  for (const failure of failures) assert.ok(failure.reason instanceof EmailTakenError, `unexpected error: ${String(failure.reason)}`);
  assert.equal(outcomes.length - failures.length, 200, 'each address is written exactly once');
  const rows = await rowsFor(emails);
  for (const email of emails) assert.deepEqual([rows.get(email)?.users, rows.get(email)?.tokens, rows.get(email)?.outbox], [1, 1, 1]);
});
