// Retention against a real PostgreSQL: old `sent` rows and expired tokens go, in batches, one
// instance at a time; everything else stays.
import assert from 'node:assert/strict';
import { before, beforeEach, test } from 'node:test';
import pg from 'pg';
import { runMigrations } from '../src/db/migrations.js';
import { tryLockRetention, unlockRetention } from '../src/db/retention.js';
import { createLogger } from '../src/logger.js';
import { Retention } from '../src/mail/retention.js';
import { createTestDatabase, file, LogCapture, outboxIds, seedEmail, seedToken, tokenHashes, waitUntil, type Database } from './support/index.js';

let db: Database;
const logs = new LogCapture();
const log = createLogger('debug', logs);

before(async () => {
  db = await createTestDatabase(file);
  await runMigrations(db.url, createLogger('silent'));
});

beforeEach(async () => {
  await db.pool.query('TRUNCATE users CASCADE');
});

/** Rows that retention must delete, and rows it must leave, with a token of each kind. */
async function seedMix() {
  const doomed = [
    await seedEmail(db.pool, { status: 'sent', ageDays: 40 }),
    await seedEmail(db.pool, { status: 'sent', ageDays: 31 }),
    await seedEmail(db.pool, { status: 'sent', ageDays: 90 }),
  ];
  const kept = [
    // Created long ago but delivered only yesterday (it waited out an outage): counted from sent_at.
    await seedEmail(db.pool, { status: 'sent', ageDays: 40, sentDaysAgo: 1 }),
    await seedEmail(db.pool, { status: 'sent', ageDays: 29 }),
    await seedEmail(db.pool, { status: 'sent', ageDays: 0 }),
    await seedEmail(db.pool, { status: 'pending', ageDays: 40 }),
    await seedEmail(db.pool, { status: 'sending', ageDays: 40 }),
    await seedEmail(db.pool, { status: 'dead', ageDays: 40, lastError: 'EENVELOPE 550: no such user' }),
  ];
  const userId = kept[0]!.userId;
  const expiredTokens = [await seedToken(db.pool, userId, -1), await seedToken(db.pool, userId, -40), await seedToken(db.pool, doomed[0]!.userId, -0.01)];
  const liveTokens = [await seedToken(db.pool, userId, 3), await seedToken(db.pool, doomed[0]!.userId, 0.01)];
  return {
    keptIds: kept.map((row) => row.outboxId).sort((a, b) => a - b),
    doomedIds: doomed.map((row) => row.outboxId),
    liveTokens: liveTokens.map((hash) => hash.toString('hex')).sort(),
    expiredCount: expiredTokens.length,
  };
}

test('one pass deletes sent rows older than the retention and expired tokens, in batches, and nothing else', async () => {
  const seeded = await seedMix();
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  try {
    // Batches of 2 for 3 old rows and 3 expired tokens: the loop must go round to finish.
    const retention = new Retention(pool, log, { retainSentDays: 30, batchSize: 2 });
    const pass = await retention.runOnce();
    assert.deepEqual(pass, { ran: true, sentDeleted: seeded.doomedIds.length, tokensDeleted: seeded.expiredCount });
    assert.deepEqual(await outboxIds(db.pool), seeded.keptIds, 'recent sent, pending, sending and dead rows stay');
    assert.deepEqual(await tokenHashes(db.pool), seeded.liveTokens, 'unexpired tokens stay');
    const users = await db.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM users');
    assert.equal(users.rows[0]!.n, 9, 'users are not retention\'s business');

    assert.deepEqual(await retention.runOnce(), { ran: true, sentDeleted: 0, tokensDeleted: 0 }, 'a second pass finds nothing');
    // The session lock went back with the pass: another connection can take it.
    const other = await pool.connect();
    try {
      assert.equal(await tryLockRetention(other), true);
      await unlockRetention(other);
    } finally {
      other.release();
    }
  } finally {
    await pool.end();
  }
});

test('MAIL_RETAIN_SENT_DAYS decides the age: with 100 days, a 90-day-old sent row stays', async () => {
  await seedEmail(db.pool, { status: 'sent', ageDays: 90 });
  const old = await seedEmail(db.pool, { status: 'sent', ageDays: 101 });
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  try {
    const pass = await new Retention(pool, log, { retainSentDays: 100 }).runOnce();
    assert.equal(pass.sentDeleted, 1);
    assert.equal((await outboxIds(db.pool)).includes(old.outboxId), false);
    assert.equal((await outboxIds(db.pool)).length, 1);
  } finally {
    await pool.end();
  }
});

test('one instance at a time: while another holds the lock, a pass deletes nothing', async () => {
  const seeded = await seedMix();
  const holderPool = new pg.Pool({ connectionString: db.url, max: 1 });
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  const holder = await holderPool.connect();
  try {
    assert.equal(await tryLockRetention(holder), true);
    const retention = new Retention(pool, log, { retainSentDays: 30 });
    assert.deepEqual(await retention.runOnce(), { ran: false, sentDeleted: 0, tokensDeleted: 0 });
    assert.equal((await outboxIds(db.pool)).length, seeded.keptIds.length + seeded.doomedIds.length, 'nothing deleted');
    await unlockRetention(holder);
    assert.equal((await retention.runOnce()).sentDeleted, seeded.doomedIds.length, 'the turn comes once the lock is free');
  } finally {
    holder.release();
    await holderPool.end();
    await pool.end();
  }
});

test('start() runs a pass soon after, then every interval; stop() ends it', async () => {
  const first = await seedEmail(db.pool, { status: 'sent', ageDays: 40 });
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  const retention = new Retention(pool, log, { retainSentDays: 30, firstRunDelayMs: 10, intervalMs: 100 });
  try {
    retention.start();
    await waitUntil(async () => !(await outboxIds(db.pool)).includes(first.outboxId), 10_000, () => 'the first pass');
    const second = await seedEmail(db.pool, { status: 'sent', ageDays: 40 });
    const kept = await seedEmail(db.pool, { status: 'dead', ageDays: 40 });
    await waitUntil(async () => !(await outboxIds(db.pool)).includes(second.outboxId), 10_000, () => 'a later pass');
    assert.deepEqual(await outboxIds(db.pool), [kept.outboxId]);
    assert.ok(
      logs.lines.some((line) => line.msg === 'retention: old sent emails and expired tokens deleted' && line.sentDeleted === 1 && line.retainSentDays === 30),
      'each deleting pass logs what it deleted',
    );
  } finally {
    await retention.stop();
    await pool.end();
  }
  // stop() waited for any pass in progress: ending the pool above would have failed a pass
  // still using it, which would have logged a warning.
  assert.equal(logs.lines.some((line) => line.msg === 'retention pass failed; trying again at the next interval'), false);
});
