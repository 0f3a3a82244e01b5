// Leases, fencing, the drain and the shutdown deadline, with the real compiled service (child
// processes, real signals), real SMTP servers and a real PostgreSQL: several instances on one
// database with leases shorter than the work they hold, a stale owner's result write, a
// database whose processes are stopped at SIGTERM, a redeploy with a 2 s provider, due rows
// under sustained load, a SIGKILL at the default lease and the order of destroy and release at
// the deadline. Each test has its own database, so rows one test leaves are never swept by the
// next test's instances.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import type pg from 'pg';
import { markFailed, markSent, release } from '../src/db/outbox.js';
import { runMigrations } from '../src/db/migrations.js';
import { createLogger } from '../src/logger.js';
import {
  closeAtEnd,
  createDatabase,
  createTestDatabase,
  describeOutcomes,
  postJson,
  scrape,
  seedEmail,
  startSignupLoad,
  startSmtpSink,
  startTempPostgres,
  startTestService,
  unique,
  uniqueEmail,
  waitUntil,
  type Database,
  type ServiceProcess,
} from './support/index.js';

const log = createLogger('warn');

/**
 * The exit of a signalled service, failing the test after `timeoutMs` rather than hanging it
 * (a shutdown that hangs is what these tests look for).
 */
async function exitOf(svc: ServiceProcess, timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  await waitUntil(() => svc.child.exitCode !== null || svc.child.signalCode !== null, timeoutMs, () => `the service to exit (last log: ${String(svc.logs.at(-1)?.msg)})`);
  return svc.exited;
}

async function stop(svc: ServiceProcess): Promise<void> {
  svc.kill('SIGTERM');
  const { code } = await exitOf(svc);
  assert.equal(code, 0, `clean exit (stderr: ${svc.stderr.join('').slice(-300)})`);
}

async function signup(svc: ServiceProcess, email: string): Promise<void> {
  const response = await postJson(svc.url, '/v1/users', { name: 'Lease Tester', email, password: 'pa55word1234' });
  assert.equal(response.status, 202, JSON.stringify(response.body));
}

/** Signs up every address, `concurrency` at a time, round robin over the services. */
async function signupAll(services: readonly ServiceProcess[], emails: readonly string[], concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < emails.length; i = next++) await signup(services[i % services.length]!, emails[i]!);
    }),
  );
}

/** A counter or gauge from GET /metrics (0 when absent). */
async function metric(svc: ServiceProcess, name: string): Promise<number> {
  return (await scrape(svc.url, 5000)).value(name) ?? 0;
}

/** Outbox rows by status, for users whose address starts with `prefix` (all rows without one). */
async function outboxStatus(db: Pick<Database, 'pool'>, prefix = ''): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ status: string; n: number }>(
    "SELECT o.status, count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 || '%' GROUP BY o.status",
    [prefix],
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.n]));
}

/** Messages per recipient in a list of envelopes. */
function countsByAddress(envelopes: readonly { envelopeTo: readonly string[] }[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const mail of envelopes) for (const to of mail.envelopeTo) counts.set(to, (counts.get(to) ?? 0) + 1);
  return counts;
}

/** Addresses (of `expected`) with no message, and addresses with more than one. */
function deliveryLedger(envelopes: readonly { envelopeTo: readonly string[] }[], expected: Iterable<string>): { missing: string[]; duplicated: string[] } {
  const counts = countsByAddress(envelopes);
  const missing = [...expected].filter((email) => !counts.has(email));
  const duplicated = [...counts].filter(([, n]) => n > 1).map(([email]) => email);
  return { missing, duplicated };
}

/** Waits until the outbox rows of `prefix` are exactly `expected` by status. */
async function waitForRows(db: Pick<Database, 'pool'>, prefix: string, expected: Record<string, number>, timeoutMs = 10_000): Promise<void> {
  let status: Record<string, number> = {};
  await waitUntil(
    async () => {
      status = await outboxStatus(db, prefix);
      return JSON.stringify(status) === JSON.stringify(expected);
    },
    timeoutMs,
    () => `outbox rows ${JSON.stringify(expected)}, got ${JSON.stringify(status)}`,
  );
}

/**
 * `count` users and their emails, due since a minute ago (retries, released rows, deferred
 * signups of an earlier burst): `PREFIX-1@example.com` to `PREFIX-count@example.com`. One
 * statement, unlike the kit's insertPendingEmails followed by an update of their ages: a
 * sweeper must never see these rows as younger than they are.
 */
async function insertDueRows(db: Pick<Database, 'pool'>, prefix: string, count: number): Promise<void> {
  const { rowCount } = await db.pool.query(
    `WITH u AS (
       INSERT INTO users (name, email, password_hash)
       SELECT 'Due Tester', $1 || '-' || g || '@example.com', 'not-a-hash' FROM generate_series(1, $2::int) AS g RETURNING id
     )
     INSERT INTO email_outbox (user_id, template, status, next_attempt_at, created_at, retry_window_start)
     SELECT id, 'welcome', 'pending', now() - interval '1 minute', now() - interval '1 minute', now() - interval '1 minute' FROM u`,
    [prefix, count],
  );
  assert.equal(rowCount, count);
}

// ---------------------------------------------------------------------------------------
// The processes of a PostgreSQL this file started: its postmaster (the parent of any backend)
// and the postmaster's children (backends and auxiliary processes), found in /proc.

/** The fields of /proc/PID/stat after the command name, or undefined once the process is gone. */
function statFields(pid: number): string[] | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so read after the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function childPids(parent: number): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .map(Number)
    .filter((pid) => Number(statFields(pid)?.[1]) === parent);
}

function processState(pid: number): string | undefined {
  return statFields(pid)?.[0];
}

/** The postmaster of the server `pool` talks to: the parent of the backend serving a query. */
async function postmasterPid(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const parent = Number(statFields(rows[0]!.pid)?.[1]);
  assert.ok(parent > 1, `the parent of backend ${rows[0]!.pid}`);
  return parent;
}

/**
 * Stops every process of the PostgreSQL whose postmaster is `postmaster`; returns the function
 * that resumes them (safe to call twice), also run at the end of `t` so that a failed
 * assertion never leaves a server stopped: it runs before the server's own stop, registered
 * earlier (a stopped server cannot stop).
 */
function freezePostgres(t: { after(fn: () => unknown): void }, postmaster: number): { pids: number[]; resume: () => void } {
  const pids = [postmaster];
  let resumed = false;
  const resume = () => {
    if (resumed) return;
    resumed = true;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone: nothing to resume
      }
    }
  };
  closeAtEnd(t, resume);
  // The postmaster first: once it is stopped it forks no new backend, so the list below is complete.
  process.kill(postmaster, 'SIGSTOP');
  for (const pid of childPids(postmaster)) {
    pids.push(pid);
    process.kill(pid, 'SIGSTOP');
  }
  return { pids, resume };
}

// ---------------------------------------------------------------------------------------

test('two instances, a 150 ms/message SMTP server, MAIL_LEASE_MS=2000: 400 signups all delivered, none twice by a lease taken over', async (t) => {
  const db = await createTestDatabase(t);
  const smtp = await startSmtpSink(t, { latencyMs: 150 });
  // Two connections per worker (4 per instance) at 150 ms a message: each instance holds its
  // 200 emails for 7.5 s at the very least, several lease lengths, so every email still waiting
  // in memory lives on the heartbeat alone. A send timeout close to the lease is fine: the
  // heartbeat, not the lease length, covers the send.
  const env = { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_LEASE_MS: '2000', MAIL_SEND_TIMEOUT_MS: '1500', MAIL_SMTP_CONNECTIONS: '2' };
  const instances = await Promise.all([startTestService(t, env), startTestService(t, env)]);
  const prefix = unique('two-leases');
  const emails = Array.from({ length: 400 }, () => uniqueEmail(prefix));

  const started = Date.now();
  await signupAll(instances, emails, 20);
  const acceptedMs = Date.now() - started;
  await waitUntil(() => emails.every((email) => smtp.to(email).length > 0), 45_000, () => `all 400 delivered (${smtp.received.length} so far)`);
  const deliveredMs = Date.now() - started;
  await waitForRows(db, prefix, { sent: 400 });

  assert.ok(deliveredMs > 3 * 2000, `the emails were held in memory for several lease lengths (${deliveredMs} ms)`);
  const { missing, duplicated } = deliveryLedger(smtp.received, emails);
  assert.deepEqual(missing, []);
  // No send lost its lease to the other instance: a result write for a row taken over would
  // have been refused and counted.
  const stale = await Promise.all(instances.map((svc) => metric(svc, 'mailoffload_stale_results_total')));
  assert.deepEqual(stale, [0, 0], 'no result was written for a row another instance had taken over');
  // Every copy is matched by an SMTP attempt the outbox recorded. A send that timed out after
  // the server had the message (MAIL_SEND_TIMEOUT_MS is 1.5 s, and a loaded machine can stall
  // that long) is retried: a second copy, at-least-once by design, with its failed attempt on
  // record. A copy sent under a lease that had been taken over records no attempt (its write is
  // fenced off), so a lease duplicate fails here.
  const { rows } = await db.pool.query<{ email: string; attempts: number; generation: number }>(
    "SELECT u.email::text AS email, o.attempts, o.lease_generation::int AS generation FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 || '%'",
    [prefix],
  );
  const copies = countsByAddress(smtp.received);
  const unexplained = rows.filter((row) => (copies.get(row.email) ?? 0) > row.attempts).map((row) => ({ ...row, copies: copies.get(row.email) }));
  assert.deepEqual(unexplained, [], 'no address got more copies than the outbox recorded attempts');
  // The heartbeat kept every lease: a row born leased (generation 1) and sent at its first
  // attempt was never claimed again, although it waited in memory for longer than the lease.
  const reclaimed = rows.filter((row) => row.attempts === 1 && row.generation !== 1);
  assert.deepEqual(reclaimed, [], 'no lease ran out while its email waited in memory');
  const retried = rows.filter((row) => row.attempts > 1).length;
  const deferred = await Promise.all(instances.map((svc) => metric(svc, 'mailoffload_signups_deferred_total')));
  await Promise.all(instances.map(stop));
  console.log(
    `# two instances, lease 2000 ms: 400 accepted in ${acceptedMs} ms, all delivered ${deliveredMs} ms after the first signup; ` +
      `${duplicated.length} addresses with a second copy, ${retried} rows retried after a failed attempt (send timeout), 0 copies from lease takeovers; ` +
      `stale results ${stale.join('/')}, deferred signups ${deferred.join('/')}`,
  );
});

test('a stale owner’s result is not written: the row taken over during the send stays with its new owner', async (t) => {
  const db = await createTestDatabase(t);
  const smtp = await startSmtpSink(t, { latencyMs: 1500 });
  const svc = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url });
  const email = uniqueEmail('stale');
  const staleBefore = await metric(svc, 'mailoffload_stale_results_total');
  await signup(svc, email);
  await waitUntil(() => smtp.dataStarted >= 1, 5000, () => 'the message being transmitted');

  // What another instance does when it claims a row whose lease it believes expired.
  const { rows } = await db.pool.query<{ id: number; lease_generation: number }>(
    `UPDATE email_outbox o SET lease_owner = 'other', lease_generation = o.lease_generation + 1, lease_expires_at = now() + interval '1 minute'
       FROM users u WHERE u.id = o.user_id AND u.email = $1 AND o.status = 'sending'
     RETURNING o.id::int AS id, o.lease_generation::int AS lease_generation`,
    [email],
  );
  assert.equal(rows.length, 1, 'the row was still being sent when it was taken over');
  const taken = rows[0]!;

  await waitUntil(() => smtp.to(email).length === 1, 5000, () => 'the send finishes at the SMTP server');
  await waitUntil(async () => (await metric(svc, 'mailoffload_stale_results_total')) === staleBefore + 1, 5000, () => 'the stale result counted');
  const after = await db.pool.query('SELECT status, lease_owner, lease_generation::int AS lease_generation, attempts, sent_at, message_id FROM email_outbox WHERE id = $1', [taken.id]);
  assert.deepEqual(after.rows[0], { status: 'sending', lease_owner: 'other', lease_generation: taken.lease_generation, attempts: 0, sent_at: null, message_id: null });
  await stop(svc);
  console.log(`# stale result: stale_results_total ${staleBefore} -> ${staleBefore + 1}; row kept by its new owner at generation ${taken.lease_generation}`);
});

test('markSent, markFailed and release with a wrong owner or generation change nothing; with the right ones they apply', async (t) => {
  const db = await createTestDatabase(t);
  await runMigrations(db.url, log);
  const policy = { retryBaseMs: 1000, retryMaxMs: 60_000, giveUpAfterMs: 3_600_000, maxAttempts: 0 };
  const snapshot = async (id: number) =>
    (await db.pool.query('SELECT status, lease_owner, lease_generation::int AS g, lease_expires_at, attempts, next_attempt_at, last_error, sent_at, message_id, updated_at FROM email_outbox WHERE id = $1', [id])).rows[0];

  const writes = {
    markSent: (owner: string, outboxId: number, generation: number) => markSent(db.pool, owner, [{ outboxId, generation, messageId: '<m@test>' }]).then((ids) => ids.size),
    markFailed: (owner: string, outboxId: number, generation: number) =>
      markFailed(db.pool, owner, [{ outboxId, generation, error: 'ETEST', permanent: false, throttled: false }], policy).then((outcomes) => outcomes.length),
    release: (owner: string, outboxId: number, generation: number) => release(db.pool, owner, [{ outboxId, generation }]),
  };
  for (const [name, write] of Object.entries(writes)) {
    const { outboxId } = await seedEmail(db.pool, { status: 'sending', attempts: 0 });
    await db.pool.query("UPDATE email_outbox SET lease_owner = 'me', lease_generation = 7 WHERE id = $1", [outboxId]);
    const before = await snapshot(outboxId);
    assert.equal(await write('me', outboxId, 6), 0, `${name} with an earlier generation matches nothing`);
    assert.equal(await write('me', outboxId, 8), 0, `${name} with a later generation matches nothing`);
    assert.equal(await write('other', outboxId, 7), 0, `${name} by another owner matches nothing`);
    assert.deepEqual(await snapshot(outboxId), before, `${name}: the row is unchanged`);
    assert.equal(await write('me', outboxId, 7), 1, `${name} by the lease holder applies`);
    const applied = await snapshot(outboxId);
    assert.equal(applied.status, { markSent: 'sent', markFailed: 'pending', release: 'pending' }[name]);
    assert.equal(applied.lease_owner, null);
  }
});

test('a row has a lease owner exactly while it is sending: the database refuses any other combination, changing nothing', async (t) => {
  const db = await createTestDatabase(t);
  await runMigrations(db.url, log);
  const sending = await seedEmail(db.pool, { status: 'sending', attempts: 0 });
  const pending = await seedEmail(db.pool, { status: 'pending' });
  const refused = [
    ["UPDATE email_outbox SET status = 'pending' WHERE id = $1", sending.outboxId, 'a row leaving sending keeps its owner'],
    ["UPDATE email_outbox SET lease_owner = NULL WHERE id = $1", sending.outboxId, 'a sending row loses its owner'],
    ["UPDATE email_outbox SET lease_owner = 'me' WHERE id = $1", pending.outboxId, 'a pending row gets an owner'],
    ["UPDATE email_outbox SET status = 'sending' WHERE id = $1", pending.outboxId, 'a row enters sending without an owner'],
  ] as const;
  const rows = async () => (await db.pool.query('SELECT id, status, lease_owner FROM email_outbox ORDER BY id')).rows;
  const before = await rows();
  for (const [sql, id, what] of refused) {
    await assert.rejects(db.pool.query(sql, [id]), (error: { code?: string; constraint?: string }) => error.code === '23514' && error.constraint === 'email_outbox_lease_owner_while_sending', what);
  }
  assert.deepEqual(await rows(), before);
});

test('PostgreSQL stopped with SIGSTOP, then SIGTERM: exit within SHUTDOWN_TIMEOUT_MS + 2 s; after SIGCONT a second instance delivers every accepted email', async (t) => {
  // A PostgreSQL of this test's own: its processes are the ones the test stops.
  const server = await startTempPostgres(t, log, 'sigstop');
  const db = await createDatabase(t, server.url, 'sigstop');
  const postmaster = await postmasterPid(db.pool);
  const smtp = await startSmtpSink(t, { latencyMs: 1000 });
  // A short lease, so that the second instance does not wait long for the leases the first one
  // could not release. The query timeout stays at its default (10 s): the exit must come from
  // the shutdown deadline, not from a query giving up.
  const env = { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_LEASE_MS: '3000' };
  const first = await startTestService(t, { ...env, SHUTDOWN_TIMEOUT_MS: '4000' });
  const prefix = unique('sigstop');
  const traffic = startSignupLoad(t, { targets: [first.url], concurrency: 10, maxDurationMs: 30_000, requestTimeoutMs: 15_000, prefix });
  await waitUntil(
    () => traffic.accepted().length >= 50 && smtp.dataStarted > smtp.received.length,
    15_000,
    () => `50 accepted and a message on the wire (${describeOutcomes(traffic.outcomes)}, ${smtp.dataStarted} started, ${smtp.received.length} received)`,
  );

  let frozen: ReturnType<typeof freezePostgres> | undefined;
  let exitMs: number;
  let signalledAt: number;
  try {
    frozen = freezePostgres(t, postmaster);
    const pids = frozen.pids;
    await waitUntil(() => pids.every((pid) => processState(pid) === 'T'), 2000, () => `PostgreSQL's ${pids.length} processes stopped`);
    signalledAt = Date.now();
    first.kill('SIGTERM');
    const { code } = await exitOf(first, 20_000);
    exitMs = Date.now() - signalledAt;
    await traffic.stop();
    assert.equal(code, 0, `exit code (stderr: ${first.stderr.join('').slice(-300)})`);
  } finally {
    frozen?.resume();
  }
  assert.ok(exitMs <= 4000 + 2000, `exited ${exitMs} ms after SIGTERM with the database stopped (deadline 4000 ms + 2000 ms)`);
  assert.ok(first.logs.some((line) => line.msg === 'stopped server'), 'the shutdown ran to its end');
  const completing = first.logs.find((line) => line.msg === 'completing background tasks');
  assert.ok(Number(completing?.pending) > 0, `emails were in flight at the drain: ${JSON.stringify(completing)}`);
  const inProgress = traffic.outcomes.filter((o) => o.startedAt < signalledAt && o.startedAt + o.elapsedMs > signalledAt);
  assert.ok(inProgress.length > 0, 'signups were in progress at SIGTERM');
  const unreleased = first.logs.find((line) => line.msg === 'could not release unfinished emails in time; their leases will expire instead');

  // The provider is fast again for the second instance: only delivery is checked from here.
  smtp.behaviour.latencyMs = 0;
  const second = await startTestService(t, env);
  const bootedAt = Date.now();
  const accepted = traffic.accepted();
  await waitUntil(() => accepted.every((o) => smtp.to(o.email).length > 0), 30_000, () => `every accepted address mailed (${smtp.received.length} messages, ${accepted.length} accepted)`);
  const deliveredMs = Date.now() - bootedAt;
  await waitUntil(async () => Object.keys(await outboxStatus(db, prefix)).join() === 'sent', 10_000, () => 'every row sent');
  const counts = countsByAddress(smtp.received);
  const resent = accepted.filter((o) => (counts.get(o.email) ?? 0) > 1).length;
  await stop(second);
  console.log(
    `# database stopped at SIGTERM: exit ${exitMs} ms after SIGTERM (SHUTDOWN_TIMEOUT_MS 4000); pending at the drain ${String(completing?.pending)}, ` +
      `handedBack ${String(completing?.handedBack)}; ${inProgress.length} signups in progress at SIGTERM; unreleased logged: ${unreleased ? `yes (pending ${String(unreleased.pending)})` : 'no'}; ` +
      `${accepted.length} accepted (${describeOutcomes(traffic.outcomes)}), all delivered by the second instance within ${deliveredMs} ms of its boot; ` +
      `${resent} sent a second time (their "sent" could not be recorded while the database was stopped)`,
  );
});

test('the pool window keeps every SMTP connection busy: a backlog goes out over all workers at once', async (t) => {
  const db = await createTestDatabase(t);
  await runMigrations(db.url, log);
  const prefix = unique('backlog');
  await insertDueRows(db, prefix, 200);
  // Only replies that reached an open connection count as sent; the counts are enough here.
  const smtp = await startSmtpSink(t, { latencyMs: 200, onlyAnsweredConnections: true, keepMessages: false });
  // 2 workers with 5 connections each (the defaults here): 10 messages at once when the window works.
  const svc = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_WORKERS: '2', MAIL_SMTP_CONNECTIONS: '5' });
  const started = Date.now();
  await waitUntil(() => smtp.accepted >= 200, 30_000, () => `200 sent (${smtp.accepted})`);
  const sentMs = Date.now() - started;
  await waitForRows(db, prefix, { sent: 200 });
  await stop(svc);
  assert.equal(smtp.maxAwaitingReply, 10, 'every connection of both workers carried a message at the same time');
  console.log(`# backlog of 200 at boot, 200 ms a message, 2 workers x 5 connections: at most ${smtp.maxAwaitingReply} messages at once, all sent ${sentMs} ms after boot`);
});

test('redeploy under load with a 2 s SMTP server: the old instance drains in at most 2.5 s, every accepted email delivered once', async (t) => {
  const db = await createTestDatabase(t);
  const smtp = await startSmtpSink(t, { latencyMs: 2000 });
  const env = { DATABASE_URL: db.url, SMTP_URL: smtp.url };
  const old = await startTestService(t, env);
  const prefix = unique('redeploy');
  const toOld = startSignupLoad(t, { targets: [old.url], concurrency: 10, maxDurationMs: 40_000, requestTimeoutMs: 10_000, prefix });
  // At 10 connections and 2 s a message the old instance holds far more than it can send.
  await waitUntil(() => toOld.accepted().length >= 200 && smtp.dataStarted >= 10, 20_000, () => `200 accepted, 10 on the wire (${describeOutcomes(toOld.outcomes)}, ${smtp.dataStarted} started)`);

  // The redeploy: the next instance is up and takes traffic, then the old one gets SIGTERM
  // while its own clients are still sending.
  const next = await startTestService(t, env);
  const toNext = startSignupLoad(t, { targets: [next.url], concurrency: 10, maxDurationMs: 40_000, requestTimeoutMs: 10_000, prefix });
  await waitUntil(() => toNext.accepted().length >= 20, 10_000, () => `the next instance accepts (${describeOutcomes(toNext.outcomes)})`);
  const signalledAt = Date.now();
  old.kill('SIGTERM');
  const { code } = await exitOf(old);
  const exitedAt = Date.now();
  await toOld.stop();
  await waitUntil(() => toNext.count((o) => o.startedAt > exitedAt && o.status === 202) >= 50, 10_000, () => 'the next instance keeps accepting');
  await toNext.stop();
  assert.equal(code, 0, old.stderr.join('').slice(-300));

  const completing = old.logs.find((line) => line.msg === 'completing background tasks');
  const stopped = old.logs.find((line) => line.msg === 'stopped server');
  assert.ok(completing && stopped, 'the drain is logged');
  const drainMs = Number(stopped.drainMs);
  const waitMs = Number(stopped.time) - Number(completing.time);
  assert.ok(Number(completing.pending) > 0, `messages were on the wire at the drain: ${JSON.stringify(completing)}`);
  assert.ok(Number(completing.handedBack) > 0, `emails not on a connection were handed back: ${JSON.stringify(completing)}`);
  assert.ok(drainMs <= 2500, `drain took ${drainMs} ms (completing background tasks to stopped server: ${waitMs} ms); the slowest message takes 2000 ms`);

  // Every accepted email, by the old instance or the next: the provider is fast again, only
  // delivery is checked from here (at 2 s a message the backlog would take minutes).
  smtp.behaviour.latencyMs = 0;
  const accepted = [...toOld.accepted(), ...toNext.accepted()];
  await waitUntil(() => accepted.every((o) => smtp.to(o.email).length > 0), 30_000, () => `every accepted address mailed (${smtp.received.length}/${accepted.length})`);
  await waitForRows(db, prefix, { sent: accepted.length });
  await stop(next);
  assert.deepEqual(deliveryLedger(smtp.received, accepted.map((o) => o.email)), { missing: [], duplicated: [] });
  const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM users WHERE email LIKE $1 || '%'", [prefix]);
  assert.equal(rows[0]!.n, accepted.length, 'a user for every 202 and for nothing else');
  console.log(
    `# redeploy, 2 s provider: SIGTERM with ${String(completing.pending)} on the wire and ${String(completing.handedBack)} handed back; drainMs ${drainMs}, ` +
      `completing->stopped ${waitMs} ms, exit ${exitedAt - signalledAt} ms after SIGTERM; ${accepted.length} accepted ` +
      `(old: ${describeOutcomes(toOld.outcomes)}; next: ${describeOutcomes(toNext.outcomes)}), each delivered once`,
  );
});

test('due rows under sustained load: 200 rows due in the outbox are all sent while signups keep the dispatcher full', async (t) => {
  const db = await createTestDatabase(t);
  const smtp = await startSmtpSink(t, { latencyMs: 100 });
  // 40 in memory, 10 connections at 100 ms a message: about 100 emails a second, fewer than
  // the signups arrive, so every signup that finds no room is deferred to the outbox.
  const svc = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_MAX_IN_FLIGHT: '40' });
  const loadMs = 20_000;
  // A few clients sign up faster than 100 a second, which keeps the 40 places full; more would
  // only take CPU from the mail threads on a small machine.
  const traffic = startSignupLoad(t, { targets: [svc.url], concurrency: 4, maxDurationMs: loadMs, requestTimeoutMs: 10_000, prefix: unique('fair-load') });
  const loadEndsAt = Date.now() + loadMs;
  await waitUntil(async () => (await metric(svc, 'mailoffload_signups_deferred_total')) >= 50, 10_000, () => `the dispatcher full (${describeOutcomes(traffic.outcomes)})`);

  // 200 emails due since before the load began (retries, released rows, deferred signups of
  // an earlier burst): older than anything the load defers.
  const prefix = unique('due');
  const insertedAt = Date.now();
  await insertDueRows(db, prefix, 200);
  const deferredAtInsert = await metric(svc, 'mailoffload_signups_deferred_total');

  const samples: { at: number; deferred: number; inFlight: number }[] = [];
  let due: Record<string, number> = {};
  await waitUntil(
    async () => {
      samples.push({ at: Date.now(), deferred: await metric(svc, 'mailoffload_signups_deferred_total'), inFlight: await metric(svc, 'mailoffload_emails_in_flight') });
      due = await outboxStatus(db, prefix);
      return due.sent === 200;
    },
    Math.max(0, loadEndsAt - Date.now()),
    () => `all 200 due rows sent before the load ends: ${JSON.stringify(due)}`,
    250,
  );
  const allSentMs = Date.now() - insertedAt;
  const deferredAtEnd = await metric(svc, 'mailoffload_signups_deferred_total');
  assert.ok(Date.now() < loadEndsAt, 'the load was still running');
  // The dispatcher stayed full meanwhile: signups kept finding no room until the last due row was sent.
  assert.ok(deferredAtEnd > deferredAtInsert, `signups were deferred while the due rows went out (${deferredAtInsert} -> ${deferredAtEnd})`);
  const lastSecond = samples.filter((s) => s.at >= Date.now() - 1500);
  assert.ok(lastSecond.length >= 2 && lastSecond.at(-1)!.deferred > lastSecond[0]!.deferred, `signups still deferred in the last second: ${JSON.stringify(lastSecond)}`);
  await traffic.stop();
  const ledger = deliveryLedger(smtp.received.filter((m) => m.envelopeTo.some((to) => to.startsWith(prefix))), Array.from({ length: 200 }, (_, i) => `${prefix}-${i + 1}@example.com`));
  assert.deepEqual(ledger, { missing: [], duplicated: [] });
  const { rows } = await db.pool.query<{ ms: number }>(
    "SELECT (extract(epoch FROM max(o.sent_at)) * 1000)::float8 AS ms FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 || '%'",
    [prefix],
  );
  await stop(svc);
  console.log(
    `# due rows under load: 200 due rows all sent ${allSentMs} ms after they were inserted (last sent_at ${Math.round(rows[0]!.ms - insertedAt)} ms after), ` +
      `${deferredAtEnd - deferredAtInsert} signups deferred meanwhile; load ${describeOutcomes(traffic.outcomes)} over ${loadMs - Math.max(0, loadEndsAt - Date.now())} ms`,
  );
});

test('SIGKILL with emails in flight at the default lease: the surviving instance delivers them within 35 s', async (t) => {
  const db = await createTestDatabase(t);
  const slow = await startSmtpSink(t, { latencyMs: 10_000 });
  const fast = await startSmtpSink(t, { latencyMs: 0 });
  // Default lease and sweep interval (the test defaults set a faster sweep).
  const defaults = { DATABASE_URL: db.url, SWEEP_INTERVAL_MS: undefined };
  const survivor = await startTestService(t, { ...defaults, SMTP_URL: fast.url });
  const doomed = await startTestService(t, { ...defaults, SMTP_URL: slow.url });
  const prefix = unique('sigkill-default');
  const emails = Array.from({ length: 40 }, () => uniqueEmail(prefix));
  await signupAll([doomed], emails, 10);
  // All 40 held in memory, some on the wire, the rest waiting for a connection.
  let inFlight = 0;
  await waitUntil(
    async () => slow.dataStarted >= 5 && (inFlight = await metric(doomed, 'mailoffload_emails_in_flight')) === 40,
    5000,
    () => `40 in flight (${inFlight}), messages on the wire (${slow.dataStarted})`,
  );
  const { rows: owners } = await db.pool.query<{ lease_owner: string; n: number }>(
    "SELECT o.lease_owner, count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 || '%' AND o.status = 'sending' GROUP BY 1",
    [prefix],
  );
  assert.equal(owners.length, 1);
  assert.equal(owners[0]!.n, 40, 'all 40 leased to the instance about to be killed');

  doomed.kill('SIGKILL');
  const killedAt = Date.now();
  assert.equal((await exitOf(doomed)).signal, 'SIGKILL');
  await waitUntil(() => emails.every((email) => fast.to(email).length > 0), 40_000, () => `all 40 at the survivor's SMTP server (${fast.received.length})`);
  const deliveredMs = Date.now() - killedAt;
  await waitUntil(async () => (await outboxStatus(db, prefix)).sent === 40, 5000, () => 'all 40 rows sent');
  assert.deepEqual(deliveryLedger(fast.received, emails), { missing: [], duplicated: [] });
  assert.ok(deliveredMs <= 35_000, `delivered ${deliveredMs} ms after the kill`);
  await stop(survivor);
  console.log(`# SIGKILL, default lease: 40 in flight (${slow.dataStarted} on the wire), all delivered by the survivor ${deliveredMs} ms after the kill`);
});

test('deadline order: the old instance’s pool is destroyed before its release, so only the next instance’s copy is accepted', async (t) => {
  const db = await createTestDatabase(t);
  // A copy counts as accepted only if its reply reached an open connection: the old instance's
  // copy, cut by the destroy, must not count, as its sender never learnt of it.
  const smtp = await startSmtpSink(t, { latencyMs: 1500, onlyAnsweredConnections: true });
  const first = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, SHUTDOWN_TIMEOUT_MS: '1000' });
  // Already running, sweeping often, with an SMTP connection already open (it sent one email):
  // it sends the row within a few tens of ms of its release.
  const second = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, SWEEP_INTERVAL_MS: '20' });
  await signup(second, uniqueEmail('warm-up'));
  await waitUntil(() => smtp.accepted === 1, 10_000, () => "the second instance's first email accepted");
  const email = uniqueEmail('deadline-order');
  const copies = () => smtp.transmissions.filter((copy) => copy.envelopeTo.includes(email));
  await signup(first, email);
  await waitUntil(() => copies().length === 1, 5000, () => 'the message being transmitted');
  const old = copies()[0]!;

  // The test holds the row's lock, so the old instance's release, when it comes, waits in
  // PostgreSQL where the test can see it: at that moment its SMTP connection must already be
  // gone. (Released first, it would still be open, and stay open while the release waits.)
  const lock = await db.pool.connect();
  // Destroyed rather than returned to the pool: a failed assertion may leave its transaction open.
  closeAtEnd(t, () => lock.release(true));
  await lock.query('BEGIN');
  await lock.query('SELECT 1 FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email = $1 FOR UPDATE OF o', [email]);
  const signalledAt = Date.now();
  first.kill('SIGTERM');
  await waitUntil(
    async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%SET status = ''pending''%'",
      );
      return rows[0]!.n === 1;
    },
    5000,
    () => "the old instance's release waiting for the row",
  );
  const releaseWaitingMs = Date.now() - signalledAt;
  // The close reaches this process a moment after it happens; a connection still open would stay
  // open until the release gives up, a second past the deadline.
  await waitUntil(() => smtp.closedAt.has(old.session), 500, () => "the old instance's SMTP connection closed before its release ran");
  await lock.query('COMMIT');

  const { code } = await exitOf(first);
  const exitMs = Date.now() - signalledAt;
  assert.equal(code, 0, first.stderr.join('').slice(-300));
  const released = first.logs.find((line) => line.msg === 'shutdown deadline reached: unfinished emails released to the outbox');
  assert.equal(released?.released, 1, 'the deadline released the row');

  await waitUntil(() => copies().length === 2 && copies()[1]!.outcome !== undefined, 10_000, () => `the second instance's copy answered (${JSON.stringify(copies())})`);
  await waitUntil(async () => (await outboxStatus(db, 'deadline-order')).sent === 1, 5000, () => 'the row marked sent');
  await stop(second);
  // Well past another 1.5 s: any copy still on its way has had its answer.
  const settledAt = Date.now() + 2000;
  await waitUntil(() => Date.now() >= settledAt && smtp.transmissions.every((copy) => copy.outcome !== undefined), 5000, () => 'every transmission answered');

  const [, fresh, ...more] = copies();
  assert.equal(more.length, 0, "two transmissions of the email: the old instance's and the next one's");
  assert.equal(old.outcome, 'cut', "the old instance's transmission was cut before its reply");
  const oldClosedAt = smtp.closedAt.get(old.session)!;
  assert.ok(oldClosedAt <= fresh!.dataStartedAt, "the old instance's connection was gone before the next copy began");
  assert.equal(fresh!.outcome, 'accepted');
  console.log(
    `# deadline order: old connection cut ${oldClosedAt - old.dataStartedAt} ms into its DATA, release seen waiting ${releaseWaitingMs} ms after SIGTERM ` +
      `(deadline 1000 ms), exit ${exitMs} ms after SIGTERM; the next copy began ${fresh!.dataStartedAt - oldClosedAt} ms after the cut; accepted copies: 1`,
  );
});
