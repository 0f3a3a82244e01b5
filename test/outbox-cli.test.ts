// `npm run outbox` as an operator runs it: the compiled command as a child process, against a
// test database holding rows of every kind, and against the embedded default (DATA_DIR, no
// DATABASE_URL) with the built service running and then stopped.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test, type TestContext } from 'node:test';
import { isAlive } from '../src/db/embedded-postgres.js';
import { runMigrations } from '../src/db/migrations.js';
import { createLogger } from '../src/logger.js';
import {
  closeAtEnd,
  createTestDatabase,
  postJson,
  runScript,
  seedEmail,
  startSmtpSink,
  startTestService,
  tempDir,
  uniqueEmail,
  waitUntil,
  type CommandRun,
  type Database,
} from './support/index.js';

const PREFIX = 'mailoffload outbox: ';

type Run = CommandRun;

/** The command with only the environment given (nothing inherited but PATH). */
function outbox(args: readonly string[], env: Record<string, string>): Promise<Run> {
  return runScript('scripts/outbox.js', args, env);
}

/** Exit 0, nothing on stderr, and the JSON document on stdout. */
async function outboxJson<T = any>(args: readonly string[], env: Record<string, string>): Promise<T> {
  const run = await outbox([...args, '--json'], env);
  assert.equal(run.code, 0, `outbox ${args.join(' ')} failed: ${run.stderr}`);
  assert.equal(run.stderr, '');
  return JSON.parse(run.stdout) as T;
}

async function outboxText(args: readonly string[], env: Record<string, string>): Promise<string> {
  const run = await outbox(args, env);
  assert.equal(run.code, 0, `outbox ${args.join(' ')} failed: ${run.stderr}`);
  assert.equal(run.stderr, '');
  return run.stdout;
}

/** Exit 1 with exactly one line on stderr and nothing on stdout; returns the line. */
function assertOneLineFailure(run: Run, what: string): string {
  assert.equal(run.code, 1, `${what}: exit code`);
  assert.equal(run.stdout, '', `${what}: nothing on stdout`);
  const lines = run.stderr.split('\n').filter((line) => line !== '');
  assert.equal(lines.length, 1, `${what}: one line on stderr, got ${JSON.stringify(run.stderr)}`);
  assert.ok(run.stderr.endsWith('\n'));
  assert.ok(lines[0]!.startsWith(PREFIX), `${what}: ${lines[0]}`);
  assert.doesNotMatch(lines[0]!, /\bat .+:\d+:\d+/, `${what}: no stack trace`);
  return lines[0]!;
}

async function migratedDatabase(t: TestContext): Promise<Database> {
  const db = await createTestDatabase(t);
  await runMigrations(db.url, createLogger('silent'));
  return db;
}

async function snapshot(db: Database): Promise<unknown[]> {
  const { rows } = await db.pool.query('SELECT id, status, attempts, next_attempt_at, updated_at, last_error, lease_owner FROM email_outbox ORDER BY id');
  return rows;
}

const hoursAgo = (hours: number) => hours / 24;

test('every command against a database holding rows of every status (DATABASE_URL)', async (t) => {
  const db = await migratedDatabase(t);
  const env = { DATABASE_URL: db.url };
  const oldestPending = await seedEmail(db.pool, { status: 'pending', ageDays: hoursAgo(2) });
  await seedEmail(db.pool, { status: 'pending', ageDays: 0 });
  const sending = await seedEmail(db.pool, { status: 'sending', ageDays: 0 });
  const sent = await seedEmail(db.pool, { status: 'sent', ageDays: 1 });
  await seedEmail(db.pool, { status: 'sent', ageDays: 2 });
  const unknownUser = (who: string) => `EENVELOPE 550: Can't send mail - all recipients were rejected: 550 5.1.1 <${who}@example.com>: No such user`;
  const dead1 = await seedEmail(db.pool, { status: 'dead', ageDays: 3, updatedDaysAgo: hoursAgo(1), attempts: 1, lastError: unknownUser('alice') });
  const dead2 = await seedEmail(db.pool, { status: 'dead', ageDays: 3, updatedDaysAgo: hoursAgo(5), attempts: 2, lastError: unknownUser('bob') });
  const dead3 = await seedEmail(db.pool, { status: 'dead', ageDays: 3, updatedDaysAgo: hoursAgo(9), attempts: 1, lastError: 'EMESSAGE 554: Message failed: 554 5.6.0 Message content rejected' });
  const deadOld = await seedEmail(db.pool, { status: 'dead', ageDays: 45, updatedDaysAgo: 40, attempts: 8, lastError: 'EAUTH 535: Invalid login: 535 5.7.8 Authentication credentials invalid' });

  // stats
  const stats = await outboxJson(['stats'], env);
  assert.deepEqual(stats.counts, { pending: 2, sending: 1, sent: 2, dead: 4 });
  assert.equal(stats.oldestPending.id, oldestPending.outboxId);
  assert.ok(stats.oldestPending.ageSeconds >= 7200 && stats.oldestPending.ageSeconds < 7200 + 600, `age ${stats.oldestPending.ageSeconds}`);
  assert.deepEqual(stats.deadByReason, [
    { reason: "EENVELOPE 550: Can't send mail - all recipients were rejected: 550 5.1.1 <address>: No such user", count: 2 },
    { reason: 'EAUTH 535: Invalid login: 535 5.7.8 Authentication credentials invalid', count: 1 },
    { reason: 'EMESSAGE 554: Message failed: 554 5.6.0 Message content rejected', count: 1 },
  ]);
  const statsText = await outboxText(['stats'], env);
  assert.match(statsText, /^pending +2$/m);
  assert.match(statsText, /^dead +4$/m);
  assert.match(statsText, new RegExp(`^oldest pending: id ${oldestPending.outboxId}, 2h( \\d+m)? old$`, 'm'));
  assert.match(statsText, /^ +2 {2}EENVELOPE 550: .*<address>: No such user$/m);

  // list
  const listed = await outboxJson(['list', '--status', 'dead', '--limit', '3'], env);
  assert.equal(listed.status, 'dead');
  assert.deepEqual(
    listed.rows.map((row: any) => row.id),
    [dead1.outboxId, dead2.outboxId, dead3.outboxId],
    'latest change first, at most --limit',
  );
  const first = listed.rows[0];
  assert.deepEqual([first.email, first.attempts, first.lastError, first.status], [dead1.email, 1, unknownUser('alice'), 'dead']);
  assert.ok(Math.abs(Date.parse(first.updatedAt) - (Date.now() - 3_600_000)) < 600_000, `updatedAt ${first.updatedAt}`);
  const listText = await outboxText(['list'], env);
  const lines = listText.trimEnd().split('\n');
  assert.match(lines[0]!, /^id +email +attempts +updated +last_error$/);
  assert.equal(lines.length, 1 + 4, 'the default status is dead');
  assert.ok(lines[1]!.startsWith(`${dead1.outboxId} `) && lines[1]!.includes(dead1.email) && lines[1]!.includes('No such user'));
  assert.equal((await outboxJson(['list', '--status', 'pending'], env)).rows.length, 2);

  // purge
  assert.deepEqual(await outboxJson(['purge', '--status', 'dead', '--older-than', '30d'], env), { purged: 1, status: 'dead', olderThan: '30d' });
  const ids = (await snapshot(db)).map((row: any) => row.id);
  assert.equal(ids.includes(deadOld.outboxId), false, 'the dead row last changed 40 days ago is gone');
  assert.equal(ids.length, 8, 'nothing else went');
  assert.equal(await outboxText(['purge', '--status', 'dead', '--older-than', '720h'], env), 'purged 0 dead emails last changed more than 720h ago\n');

  // requeue by id: only dead rows move
  const before = Date.now();
  assert.deepEqual(await outboxJson(['requeue', '--id', String(dead1.outboxId), '--id', String(sent.outboxId)], env), {
    requeued: 1,
    ids: [dead1.outboxId],
    notDead: [sent.outboxId],
  });
  const row = async (id: number) =>
    (await db.pool.query('SELECT status, attempts, last_error, lease_owner, next_attempt_at <= now() AS due, updated_at FROM email_outbox WHERE id = $1', [id])).rows[0];
  const { updated_at: requeuedAt, ...requeued } = await row(dead1.outboxId);
  assert.deepEqual(requeued, { status: 'pending', attempts: 0, last_error: unknownUser('alice'), lease_owner: null, due: true }, 'pending, due now, attempts from 0, reason kept');
  assert.ok(requeuedAt.getTime() >= before - 5_000, 'the trigger stamped the change');
  assert.deepEqual((({ updated_at: _, ...rest }) => rest)(await row(sent.outboxId)), { status: 'sent', attempts: 1, last_error: null, lease_owner: null, due: true }, 'a sent row is left alone');

  // requeue every dead row: the sending row (leased to an instance) is never touched
  assert.equal(
    await outboxText(['requeue', '--status', 'dead'], env),
    `requeued 2 dead emails (id ${[dead2.outboxId, dead3.outboxId].sort((a, b) => a - b).join(', ')}): pending, due now\n`,
  );
  const after = await outboxJson(['stats'], env);
  assert.deepEqual(after.counts, { pending: 5, sending: 1, sent: 2, dead: 0 });
  assert.deepEqual(after.deadByReason, []);
  const leased = await db.pool.query('SELECT status, lease_owner FROM email_outbox WHERE id = $1', [sending.outboxId]);
  assert.deepEqual(leased.rows[0], { status: 'sending', lease_owner: 'another-instance' });
  assert.equal(await outboxText(['requeue', '--status', 'dead'], env), 'requeued 0 dead emails: pending, due now\n');
});

test('bad arguments: exit 1, one line on stderr, nothing changed', async (t) => {
  const db = await migratedDatabase(t);
  const env = { DATABASE_URL: db.url };
  const dead = await seedEmail(db.pool, { status: 'dead', ageDays: 60, lastError: 'EMESSAGE 554: refused' });
  await seedEmail(db.pool, { status: 'sent', ageDays: 60 });
  await seedEmail(db.pool, { status: 'pending', ageDays: 60 });
  const before = await snapshot(db);
  const cases: [string[], RegExp][] = [
    [[], /a command is required/],
    [['resend'], /unknown command "resend"/],
    [['stats', 'now'], /unexpected argument "now"/],
    [['stats', '--limit', '5'], /stats does not take --limit/],
    [['stats', '--verbose'], /Unknown option '--verbose'/],
    [['list', '--limit'], /argument missing/],
    [['list', '--limit', 'ten'], /--limit must be an integer from 1 to 10000 \(got "ten"\)/],
    [['list', '--limit', '0'], /--limit must be/],
    [['list', '--status', 'lost'], /--status must be one of pending, sending, sent, dead/],
    [['list', '--json=yes'], /does not take an argument/],
    [['requeue'], /requeue needs --status dead or --id N/],
    [['requeue', '--status', 'pending'], /--status must be dead \(got "pending"\)/],
    [['requeue', '--id', '1.5'], /--id must be a positive integer/],
    // A value that starts with a dash is taken for an option: parseArgs calls it ambiguous.
    [['requeue', '--id', String(dead.outboxId), '--id', '-3'], /Option '--id' argument is ambiguous/],
    [['requeue', `--id=-3`], /--id must be a positive integer \(got "-3"\)/],
    [['requeue', '--status', 'dead', '--older-than', '1d'], /requeue does not take --older-than/],
    [['purge', '--status', 'dead'], /purge needs --older-than/],
    [['purge', '--older-than', '30d'], /purge needs --status dead/],
    [['purge', '--status', 'pending', '--older-than', '1s'], /--status must be one of dead, sent/],
    [['purge', '--status', 'dead', '--older-than', '30'], /--older-than must be a whole number with a unit s, m, h or d/],
    [['purge', '--status', 'dead', '--older-than', '1.5d'], /--older-than must be/],
    [['purge', '--status', 'dead', '--older-than=-1d'], /--older-than must be/],
    [['purge', '--status', 'dead', '--older-than', '9999d'], /at most 3650d/],
  ];
  for (const [args, expected] of cases) {
    const line = assertOneLineFailure(await outbox(args, env), `outbox ${args.join(' ')}`);
    assert.match(line, expected, `outbox ${args.join(' ')}`);
  }
  assert.deepEqual(await snapshot(db), before, 'no bad command changed a row');
  // --help is not an error.
  const help = await outbox(['--help'], env);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^usage: npm run outbox -- <command>/);
});

test('an unreachable database, a wrong password, an unmigrated database, a bad environment: one line, exit 1, no password', async (t) => {
  const closedPort = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
  const secret = 'S3cret-never-printed';
  const refused = assertOneLineFailure(await outbox(['stats'], { DATABASE_URL: `postgres://postgres:${secret}@127.0.0.1:${closedPort}/mail` }), 'closed port');
  assert.match(refused, new RegExp(`cannot reach the database at 127\\.0\\.0\\.1:${closedPort}/mail: .*ECONNREFUSED`));

  const wrong = new URL(process.env.TEST_DATABASE_URL!);
  wrong.password = secret;
  const denied = assertOneLineFailure(await outbox(['list', '--json'], { DATABASE_URL: wrong.toString() }), 'wrong password');
  assert.match(denied, /cannot reach the database at .*password authentication failed/);
  for (const line of [refused, denied]) assert.equal(line.includes(secret), false, 'the password is never printed');

  const empty = await createTestDatabase(t);
  const unmigrated = assertOneLineFailure(await outbox(['stats'], { DATABASE_URL: empty.url }), 'unmigrated database');
  assert.match(unmigrated, /lacks the current outbox schema: run npm run migrate/);

  assert.match(assertOneLineFailure(await outbox(['stats'], { PORT: 'abc' }), 'bad PORT'), /invalid environment: PORT must be an integer port/);
  const badUrl = assertOneLineFailure(await outbox(['stats'], { DATABASE_URL: `mysql://root:${secret}@db/x` }), 'bad DATABASE_URL');
  assert.match(badUrl, /invalid environment: DATABASE_URL must be a postgres:\/\//);
  assert.equal(badUrl.includes(secret), false);

  const noDir = path.join(tmpdir(), `mailoffload-nothing-${process.pid}-${Date.now()}`);
  const missing = assertOneLineFailure(await outbox(['stats'], { DATA_DIR: noDir }), 'DATA_DIR without a database');
  assert.match(missing, /no embedded PostgreSQL under .*: the service has not run with this DATA_DIR/);
  assert.equal(existsSync(noDir), false, 'a tool does not create a database where there was none');
});

// ---------------------------------------------------------------------------------------
// The embedded default: no DATABASE_URL, the service's DATA_DIR

/**
 * A DATA_DIR for the embedded default, removed at the end of the test; a service killed by a
 * failed test leaves its PostgreSQL (its own process group) behind, so that is stopped first.
 */
function embeddedDataDir(t: TestContext): string {
  const dir = tempDir(t, 'outbox');
  closeAtEnd(t, async () => {
    const pidFile = path.join(dir, 'pg', 'postmaster.pid');
    if (!existsSync(pidFile)) return;
    const pid = Number.parseInt(readFileSync(pidFile, 'utf8'), 10);
    if (isAlive(pid)) process.kill(pid, 'SIGINT');
    await waitUntil(() => !isAlive(pid), 30_000, () => `PostgreSQL ${pid} to stop`).catch(() => undefined);
  });
  return dir;
}

function assertNothingLeftRunning(dataDir: string): void {
  assert.equal(existsSync(path.join(dataDir, 'instance.pid')), false, 'DATA_DIR is free again');
  assert.equal(existsSync(path.join(dataDir, 'pg-connection.json')), false, 'no connection record left');
  assert.equal(existsSync(path.join(dataDir, 'pg', 'postmaster.pid')), false, 'the PostgreSQL started for the command was stopped');
}

test('every command against the embedded default, with the service running and then stopped', async (t) => {
  const dataDir = embeddedDataDir(t);
  const env = { DATA_DIR: dataDir };
  const refusing = new Set<string>();
  const smtp = await startSmtpSink(t, { reply: (_session, rcpt) => (rcpt.some((address) => refusing.has(address)) ? 550 : undefined) });
  const serviceEnv = { DATA_DIR: dataDir, SMTP_URL: smtp.url };
  let service = await startTestService(t, serviceEnv);

  const signUp = async (email: string) => {
    const response = await postJson(service.url, '/v1/users', { name: 'Outbox Test', email, password: 'pa55word-long' });
    assert.equal(response.status, 202);
  };
  const countsOf = async () => (await outboxJson(['stats'], env)).counts as Record<string, number>;
  const waitForCounts = (expected: Record<string, number>) => {
    let last: Record<string, number> = {};
    return waitUntil(
      async () => {
        last = await countsOf();
        return Object.entries(expected).every(([status, n]) => last[status] === n);
      },
      60_000,
      () => `counts ${JSON.stringify(expected)}, last ${JSON.stringify(last)}`,
      250,
    );
  };
  const deadIdOf = async (email: string): Promise<number> => {
    const rows = (await outboxJson(['list', '--status', 'dead'], env)).rows as { id: number; email: string }[];
    const row = rows.find((r) => r.email === email);
    assert.ok(row, `${email} is listed as dead`);
    return row.id;
  };

  // --- the service is running: the command uses its PostgreSQL
  const ok = uniqueEmail('ok');
  const bounce1 = uniqueEmail('bounce');
  refusing.add(bounce1);
  await signUp(ok);
  await signUp(bounce1);
  await waitUntil(() => smtp.accepted >= 1, 20_000, () => 'the first email accepted');
  await waitForCounts({ sent: 1, dead: 1, pending: 0, sending: 0 });
  const stats = await outboxJson(['stats'], env);
  assert.equal(stats.deadByReason.length, 1);
  assert.match(stats.deadByReason[0].reason, /550/);
  assert.match(await outboxText(['stats'], env), /^sent +1$/m);
  const listed = await outboxJson(['list', '--status', 'dead'], env);
  assert.deepEqual(
    listed.rows.map((row: any) => [row.email, row.attempts >= 1, /550/.test(row.lastError)]),
    [[bounce1, true, true]],
  );
  assert.match(await outboxText(['list', '--status', 'sent'], env), new RegExp(ok.replace(/[.]/g, '\\.')));

  refusing.delete(bounce1);
  assert.match(await outboxText(['requeue', '--status', 'dead'], env), /^requeued 1 dead email \(id \d+\): pending, due now$/m);
  await waitUntil(() => smtp.to(bounce1).length === 1, 30_000, () => 'the requeued email delivered by the running service');
  await waitForCounts({ sent: 2, dead: 0 });

  const bounce2 = uniqueEmail('bounce');
  refusing.add(bounce2);
  await signUp(bounce2);
  await waitForCounts({ dead: 1 });
  assert.deepEqual(await outboxJson(['purge', '--status', 'dead', '--older-than', '0s'], env), { purged: 1, status: 'dead', olderThan: '0s' });
  await waitForCounts({ sent: 2, dead: 0, pending: 0 });
  assert.equal(service.child.exitCode, null, 'the service kept running throughout');
  assert.ok(existsSync(path.join(dataDir, 'instance.pid')), 'the service still holds DATA_DIR');

  // Two more dead emails for the stopped service.
  const bounce3 = uniqueEmail('bounce');
  const bounce4 = uniqueEmail('bounce');
  refusing.add(bounce3);
  refusing.add(bounce4);
  await signUp(bounce3);
  await signUp(bounce4);
  await waitForCounts({ dead: 2 });
  const id3 = await deadIdOf(bounce3);
  const id4 = await deadIdOf(bounce4);

  service.kill('SIGTERM');
  assert.deepEqual(await service.exited, { code: 0, signal: null });

  // --- the service is stopped: each command starts the cluster and stops it again
  assertNothingLeftRunning(dataDir);
  const stoppedStats = await outboxJson(['stats'], env);
  assert.deepEqual(stoppedStats.counts, { pending: 0, sending: 0, sent: 2, dead: 2 });
  assertNothingLeftRunning(dataDir);
  assert.match(await outboxText(['stats'], env), /^dead +2$/m);
  assert.deepEqual(
    (await outboxJson(['list', '--status', 'dead', '--limit', '10'], env)).rows.map((row: any) => row.id).sort(),
    [id3, id4].sort(),
  );
  assert.match(await outboxText(['list'], env), new RegExp(bounce3.replace(/[.]/g, '\\.')));
  assertNothingLeftRunning(dataDir);
  assert.deepEqual(await outboxJson(['requeue', '--id', String(id3)], env), { requeued: 1, ids: [id3], notDead: [] });
  assertNothingLeftRunning(dataDir);
  assert.equal(await outboxText(['purge', '--status', 'dead', '--older-than', '0s'], env), 'purged 1 dead email last changed more than 0s ago\n');
  assertNothingLeftRunning(dataDir);
  assert.deepEqual((await outboxJson(['stats'], env)).counts, { pending: 1, sending: 0, sent: 2, dead: 0 });

  // --- started again, the service sends what was requeued while it was stopped
  refusing.clear();
  service = await startTestService(t, serviceEnv);
  await waitUntil(() => smtp.to(bounce3).length === 1, 30_000, () => 'the email requeued while stopped, delivered after the restart');
  await waitForCounts({ pending: 0, sent: 3, dead: 0 });
  assert.equal(smtp.to(bounce4).length, 0, 'the purged email is gone for good');
  service.kill('SIGTERM');
  assert.deepEqual(await service.exited, { code: 0, signal: null });
  assertNothingLeftRunning(dataDir);
});
