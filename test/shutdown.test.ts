// Graceful shutdown of the real compiled service (a child process, real signals) against a
// real SMTP server with injected latency and a real PostgreSQL: the drain, the deadline, a
// second signal, idle keep-alive clients and a failing background task.
// The crash and load scenarios are in shutdown-load.test.ts.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import path from 'node:path';
import { before, test, type TestContext } from 'node:test';
import {
  createTestDatabase,
  file,
  postJson,
  startTestService,
  startSmtpSink,
  tempDir,
  uniqueEmail,
  waitUntil,
  type Database,
  type ServiceOptions,
  type ServiceProcess,
} from './support/index.js';

let db: Database;

before(async () => {
  db = await createTestDatabase(file);
});

/** The service on this file's database, stopped when the test ends (a failed assertion never leaves it running). */
const service = (t: TestContext, env: Record<string, string | undefined>, options?: ServiceOptions) => startTestService(t, { DATABASE_URL: db.url, ...env }, options);

async function signup(svc: ServiceProcess, email: string): Promise<number> {
  const response = await postJson(svc.url, '/v1/users', { name: 'Shutdown Tester', email, password: 'pa55word1234' });
  assert.equal(response.status, 202, JSON.stringify(response.body));
  return response.body.user.id as number;
}

interface OutboxRow {
  id: number;
  status: string;
  attempts: number;
  lease_owner: string | null;
  lease_expires_at: Date | null;
}

async function outboxOf(email: string): Promise<OutboxRow> {
  const { rows } = await db.pool.query<OutboxRow>(
    'SELECT o.id::int AS id, o.status, o.attempts, o.lease_owner, o.lease_expires_at FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email = $1',
    [email],
  );
  assert.equal(rows.length, 1, `one outbox row for ${email}`);
  return rows[0]!;
}

function indexOfLog(svc: ServiceProcess, msg: string): number {
  return svc.logs.findIndex((line) => line.msg === msg);
}

async function stop(svc: ServiceProcess): Promise<void> {
  svc.kill('SIGTERM');
  const { code } = await svc.exited;
  assert.equal(code, 0, `clean exit (stderr: ${svc.stderr.join('').slice(-300)})`);
}

test('SIGTERM right after a 202: the email is sent before exit, log lines in order, drain takes as long as the email', async (t) => {
  const smtp = await startSmtpSink(t, { latencyMs: 2000 });
  const svc = await service(t, { SMTP_URL: smtp.url });
  const email = uniqueEmail('drain');
  await signup(svc, email);

  const signalled = Date.now();
  svc.kill('SIGTERM');
  let receivedAtExit = -1;
  void svc.exited.then(() => (receivedAtExit = smtp.to(email).length));
  const { code } = await svc.exited;
  const exitMs = Date.now() - signalled;

  assert.equal(code, 0);
  assert.equal(receivedAtExit, 1, 'the welcome email reached the SMTP server before the process exited');
  const shutting = indexOfLog(svc, 'shutting down server');
  const completing = indexOfLog(svc, 'completing background tasks');
  const stopped = indexOfLog(svc, 'stopped server');
  assert.ok(shutting >= 0 && shutting < completing && completing < stopped, `log order: ${svc.logs.map((l) => l.msg).join(' | ')}`);
  assert.equal(svc.logs[shutting]!.signal, 'SIGTERM');
  assert.equal(svc.logs[completing]!.pending, 1);
  const drainMs = Number(svc.logs[stopped]!.drainMs);
  assert.ok(drainMs >= 1800 && drainMs < 5000, `drain took ${drainMs} ms: about the 2 s SMTP latency, not the 25 s deadline`);
  assert.equal((await outboxOf(email)).status, 'sent');
  console.log(`# scenario 1: drainMs=${drainMs} exitMs=${exitMs}`);
});

test('deadline: SMTP slower than SHUTDOWN_TIMEOUT_MS, the email is released to the outbox and the next instance sends it', async (t) => {
  const slow = await startSmtpSink(t, { latencyMs: 10_000 });
  const first = await service(t, { SMTP_URL: slow.url, SHUTDOWN_TIMEOUT_MS: '1000' });
  const email = uniqueEmail('deadline');
  await signup(first, email);
  // The message is on the wire (the server is sitting on its DATA): the drain must wait for it.
  await waitUntil(() => slow.dataStarted >= 1, 5000, () => 'the message being transmitted');

  const signalled = Date.now();
  first.kill('SIGTERM');
  const { code } = await first.exited;
  const exitMs = Date.now() - signalled;
  assert.equal(code, 0, first.stderr.join(''));
  assert.ok(exitMs < 2000, `exited ${exitMs} ms after SIGTERM (deadline 1000 ms)`);
  const released = first.logs.find((line) => line.msg === 'shutdown deadline reached: unfinished emails released to the outbox');
  assert.ok(released, 'the deadline release is logged');
  assert.equal(released.released, 1);
  const row = await outboxOf(email);
  assert.equal(row.status, 'pending', 'released back to the outbox');
  assert.equal(row.lease_owner, null);
  assert.equal(row.lease_expires_at, null);
  assert.equal(slow.to(email).length, 0);

  const fast = await startSmtpSink(t);
  const second = await service(t, { SMTP_URL: fast.url });
  const booted = Date.now();
  await waitUntil(() => fast.to(email).length === 1, 10_000, () => `the second instance sends ${email}`);
  const deliveredMs = Date.now() - booted;
  await waitUntil(async () => (await outboxOf(email)).status === 'sent', 5000, () => 'the row marked sent');
  await stop(second);
  console.log(`# scenario 2: exitMs=${exitMs} released=${String(released.released)} second instance delivered ${deliveredMs} ms after boot`);
});

test('a second SIGTERM during a long drain exits at once with code 1; the next instance sends what was left', async (t) => {
  const slow = await startSmtpSink(t, { latencyMs: 10_000 });
  const env = { MAIL_LEASE_MS: '3000' };
  const first = await service(t, { ...env, SMTP_URL: slow.url });
  const emails = [uniqueEmail('second-signal'), uniqueEmail('second-signal')];
  for (const email of emails) await signup(first, email);
  await waitUntil(() => slow.dataStarted >= 2, 5000, () => 'both messages being transmitted');

  first.kill('SIGTERM');
  const completing = await first.waitForLog('completing background tasks');
  assert.equal(completing.pending, 2);
  const signalled = Date.now();
  first.kill('SIGTERM');
  const { code } = await first.exited;
  const exitMs = Date.now() - signalled;
  assert.equal(code, 1);
  assert.ok(exitMs < 1000, `exited ${exitMs} ms after the second signal`);
  assert.ok(first.logs.some((line) => line.msg === 'second signal: exiting immediately, unfinished emails stay in the outbox'));
  assert.equal(first.logs.some((line) => line.msg === 'stopped server'), false);
  for (const email of emails) {
    assert.equal((await outboxOf(email)).status, 'sending', 'still leased to the dead instance');
    assert.equal(slow.to(email).length, 0);
  }

  const fast = await startSmtpSink(t);
  const second = await service(t, { ...env, SMTP_URL: fast.url });
  const booted = Date.now();
  await waitUntil(() => emails.every((email) => fast.to(email).length === 1), 15_000, () => 'the second instance sends both emails');
  const deliveredMs = Date.now() - booted;
  await waitUntil(async () => (await Promise.all(emails.map(outboxOf))).every((row) => row.status === 'sent'), 5000, () => 'rows marked sent');
  await stop(second);
  console.log(`# scenario 7: second signal exit ${exitMs} ms, code ${code}; next instance delivered ${emails.length} after ${deliveredMs} ms (lease 3000 ms)`);
});

test('a draining instance claims nothing new: emails deferred by a full pool stay in the outbox for the next instance', async (t) => {
  const slow = await startSmtpSink(t, { latencyMs: 3000 });
  // Room for 5 emails in memory: signups 6 to 10 are born pending, for a sweeper.
  const first = await service(t, { SMTP_URL: slow.url, MAIL_MAX_IN_FLIGHT: '5' });
  const emails = Array.from({ length: 10 }, () => uniqueEmail('deferred'));
  for (const email of emails) await signup(first, email);
  await waitUntil(() => slow.dataStarted >= 5, 5000, () => 'the 5 emails in memory being transmitted');

  first.kill('SIGTERM');
  const completing = await first.waitForLog('completing background tasks');
  assert.equal(completing.pending, 5, 'the drain waits for the 5 emails on the wire');
  const { code } = await first.exited;
  assert.equal(code, 0);
  const rows = await Promise.all(emails.map(outboxOf));
  assert.deepEqual(rows.slice(0, 5).map((row) => row.status), ['sent', 'sent', 'sent', 'sent', 'sent']);
  assert.deepEqual(
    rows.slice(5).map((row) => [row.status, row.attempts]),
    Array.from({ length: 5 }, () => ['pending', 0]),
    'the deferred rows were never claimed, not even when the drain freed room',
  );

  const fast = await startSmtpSink(t);
  const second = await service(t, { SMTP_URL: fast.url });
  await waitUntil(() => emails.slice(5).every((email) => fast.to(email).length === 1), 10_000, () => 'the next instance sends the deferred emails');
  await stop(second);
  assert.equal(fast.received.length, 5);
  console.log(`# deferred: drain waited for 5 (drainMs ${String(first.logs.find((l) => l.msg === 'stopped server')?.drainMs)}), 5 deferred left pending, sent by the next instance`);
});

/** A raw HTTP/1.1 connection, so the test controls exactly when each byte is sent. */
function rawConnection(port: number): Promise<{ socket: Socket; text: () => string; closed: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (data += chunk));
    const closed = new Promise<void>((done) => socket.on('close', () => done()));
    socket.once('error', reject);
    socket.once('connect', () => resolve({ socket, text: () => data, closed }));
  });
}

test('connections open at the signal: idle keep-alive ones are closed (fastify#7044), a signup in flight completes, new requests get 503 and the healthcheck says draining', async (t) => {
  const smtp = await startSmtpSink(t);
  const svc = await service(t, { SMTP_URL: smtp.url });
  const healthcheck = 'GET /v1/healthcheck HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n';

  // A: a keep-alive connection that made one request and then sits idle.
  const idle = await rawConnection(svc.port);
  idle.socket.write(healthcheck);
  await waitUntil(() => idle.text().includes('"status":"available"'), 5000, () => 'the healthcheck answer on the idle connection');

  // B: a keep-alive connection whose signup is in flight when the signal arrives (half its body sent).
  const email = uniqueEmail('in-flight');
  const body = JSON.stringify({ name: 'Slow Client', email, password: 'pa55word1234' });
  const inFlight = await rawConnection(svc.port);
  inFlight.socket.write(
    `POST /v1/users HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 20)}`,
  );
  // C and D: requests whose headers are not complete at the signal (a load balancer's probe and
  // a client's signup, arriving as the shutdown begins): they are answered after it began.
  const probe = await rawConnection(svc.port);
  probe.socket.write('GET /v1/healthcheck HTTP/1.1\r\nHost: localhost\r\n');
  const late = await rawConnection(svc.port);
  const lateBody = JSON.stringify({ name: 'Late Client', email: uniqueEmail('late'), password: 'pa55word1234' });
  late.socket.write(`POST /v1/users HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(lateBody)}\r\n`);
  // A second request on A, written after the others, answered: the server has read their bytes.
  const before = idle.text().length;
  idle.socket.write(healthcheck);
  await waitUntil(() => idle.text().slice(before).includes('"status":"available"'), 5000, () => 'the second healthcheck answer');

  const signalled = Date.now();
  svc.kill('SIGTERM');
  await svc.waitForLog('shutting down server');
  inFlight.socket.write(body.slice(20));
  probe.socket.write('\r\n');
  late.socket.write(`\r\n${lateBody}`);

  await Promise.all([inFlight.closed, idle.closed, probe.closed, late.closed]);
  const { code } = await svc.exited;
  const exitMs = Date.now() - signalled;
  assert.equal(code, 0);
  assert.ok(exitMs < 3000, `exited ${exitMs} ms after SIGTERM; Fastify's keep-alive timeout is 60 s`);

  const response = inFlight.text();
  assert.match(response, /^HTTP\/1\.1 202 /, response);
  assert.match(response, /\r\nconnection: close\r\n/i, 'the server tells a client it is closing the connection');
  // Its email was either on an SMTP connection before the drain (and waited for) or handed back
  // to the outbox, due now, for the next instance: never lost, never both.
  const row = await outboxOf(email);
  if (smtp.to(email).length === 1) assert.equal(row.status, 'sent', 'delivered before exit and recorded');
  else assert.deepEqual([row.status, row.attempts, row.lease_owner], ['pending', 0, null], 'handed back unsent for the next instance');
  // A request still incomplete when the server closes its idle connections is cut without an
  // answer (Node counts a connection without a whole request as idle); one completed just before
  // is answered 503. Both tell a client "not here, retry elsewhere"; neither is ever served.
  const refused = (text: string, body: string) => text === '' || (/^HTTP\/1\.1 503 /.test(text) && text.endsWith(body));
  assert.ok(refused(probe.text(), '{"status":"draining"}'), `the probe: ${probe.text()}`);
  assert.ok(refused(late.text(), '{"error":"the server is shutting down, please retry"}'), `the late signup: ${late.text()}`);
  const lateUsers = await db.pool.query('SELECT 1 FROM users WHERE email = $1', [JSON.parse(lateBody).email]);
  assert.equal(lateUsers.rowCount, 0, 'the late signup created no user');
  assert.equal(smtp.received.filter((mail) => !mail.envelopeTo.includes(email)).length, 0, 'the signup refused with 503 got no email');
  console.log(`# connections at the signal: exit ${exitMs} ms after SIGTERM with an idle keep-alive connection, a signup in flight (202 + email), a probe (503 draining) and a late signup (503)`);
});

test('an unexpected error in a background task is logged and survived; the email is sent once the fault is gone', async (t) => {
  const smtp = await startSmtpSink(t);
  const svc = await service(t, { SMTP_URL: smtp.url, MAIL_LEASE_MS: '3000' });
  // A fault the code cannot expect: recording this user's email as sent fails (SQLSTATE P0001).
  await db.pool.query(`
    CREATE OR REPLACE FUNCTION test_fail_mark_sent() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF EXISTS (SELECT 1 FROM users WHERE id = NEW.user_id AND email LIKE 'background-fault-%') THEN
        RAISE EXCEPTION 'injected fault while recording a sent email';
      END IF;
      RETURN NEW;
    END $$`);
  await db.pool.query(
    "CREATE TRIGGER test_fail_mark_sent BEFORE UPDATE ON email_outbox FOR EACH ROW WHEN (NEW.status = 'sent') EXECUTE FUNCTION test_fail_mark_sent()",
  );
  try {
    const faulty = uniqueEmail('background-fault');
    await signup(svc, faulty);
    const failure = await svc.waitForLog('background task failed', 10_000);
    assert.equal(failure.component, 'dispatcher');
    assert.match(JSON.stringify(failure.err), /injected fault/);

    // Survived: the process is up, healthy, and takes and delivers other signups.
    assert.equal(svc.child.exitCode, null);
    const health = await fetch(`${svc.url}/v1/healthcheck`);
    assert.equal(health.status, 200);
    const other = uniqueEmail('after-fault');
    await signup(svc, other);
    await waitUntil(() => smtp.to(other).length === 1, 10_000, () => `email to ${other}`);
    await waitUntil(async () => (await outboxOf(other)).status === 'sent', 5000, () => 'the other row marked sent');

    // The fault goes away: the row, still leased, is sent again once its lease expires.
    await db.pool.query('DROP TRIGGER test_fail_mark_sent ON email_outbox');
    await waitUntil(async () => (await outboxOf(faulty)).status === 'sent', 15_000, () => 'the faulty row sent after the fault is gone');
    const copies = smtp.to(faulty);
    assert.ok(copies.length >= 2, 'at-least-once: the message was sent again because its result could not be recorded');
    assert.equal(new Set(copies.map((mail) => mail.parsed.messageId)).size, 1, 'every copy carries the same Message-ID');
    await stop(svc);
    console.log(`# background fault: survived; ${copies.length} copies of the faulty email, one Message-ID`);
  } finally {
    await db.pool.query('DROP TRIGGER IF EXISTS test_fail_mark_sent ON email_outbox');
  }
});

test('a signal during boot (embedded PostgreSQL up, migrations running) stops everything it started and exits 0', async (t) => {
  // Open to the `postgres` user, who runs PostgreSQL when we are root.
  const dataDir = tempDir(t, 'boot-signal');
  const pidFile = path.join(dataDir, 'pg', 'postmaster.pid');
  const smtp = await startSmtpSink(t);
  try {
    const svc = await service(t, { DATABASE_URL: undefined, DATA_DIR: dataDir, SMTP_URL: smtp.url }, { waitReady: false });
    await svc.waitForLog('embedded PostgreSQL started', 60_000);
    svc.kill('SIGINT');
    const { code } = await svc.exited;
    assert.equal(code, 0, svc.stderr.join(''));
    assert.ok(svc.logs.some((line) => line.msg === 'stopped server'), svc.logs.map((line) => line.msg).join(' | '));
    assert.equal(svc.logs.some((line) => line.msg === 'starting server'), false, 'the signal came before the server listened');
    assert.equal(existsSync(pidFile), false, 'PostgreSQL was stopped, not left running');
  } finally {
    // Never leave a PostgreSQL behind, whatever failed above.
    if (existsSync(pidFile)) {
      const pid = Number.parseInt(readFileSync(pidFile, 'utf8').split('\n')[0] ?? '', 10);
      try {
        process.kill(pid, 'SIGINT');
        await waitUntil(() => !existsSync(pidFile), 10_000, () => 'the orphan PostgreSQL to stop');
      } catch {
        // already gone
      }
    }
  }
});
