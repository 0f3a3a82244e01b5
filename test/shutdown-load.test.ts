// Redeploys and crashes under load, with the real compiled service (child processes, real
// signals), a real SMTP server and a real PostgreSQL: SIGKILL with 100 emails in flight,
// SIGTERM while a client sends signups at full speed, and two instances sharing a database.
// The ledger is per address: what the API answered, and what the SMTP server received.
import assert from 'node:assert/strict';
import { before, test, type TestContext } from 'node:test';
import {
  createTestDatabase,
  describeOutcomes,
  file,
  startTestService,
  startSignupLoad,
  startSmtpSink,
  waitUntil,
  type Database,
  type ServiceProcess,
  type SignupOutcome,
  type SmtpSink,
} from './support/index.js';

let db: Database;

before(async () => {
  db = await createTestDatabase(file);
});

/** The service on this file's database, stopped when the test ends (a failed assertion never leaves it running). */
const service = (t: TestContext, env: Record<string, string>) => startTestService(t, { DATABASE_URL: db.url, ...env });

async function stop(svc: ServiceProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  svc.kill(signal);
  const { code } = await svc.exited;
  assert.equal(code, 0, `clean exit (stderr: ${svc.stderr.join('').slice(-300)})`);
  assert.equal(svc.logs.find((line) => line.msg === 'shutting down server')?.signal, signal);
}

/** Outbox rows of users whose address starts with `prefix`, by status. */
async function outboxStatus(prefix: string): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ status: string; n: number }>(
    "SELECT o.status, count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 || '%' GROUP BY o.status",
    [prefix],
  );
  return Object.fromEntries(rows.map((row) => [row.status, row.n]));
}

async function usersWithPrefix(prefix: string): Promise<Set<string>> {
  const { rows } = await db.pool.query<{ email: string }>("SELECT email::text AS email FROM users WHERE email LIKE $1 || '%'", [prefix]);
  return new Set(rows.map((row) => row.email));
}

/** Every accepted address got exactly one message, and no other address got any. */
function assertExactlyOncePerAccepted(smtp: SmtpSink, accepted: readonly SignupOutcome[]): void {
  const counts = smtp.byRecipient;
  const acceptedSet = new Set(accepted.map((outcome) => outcome.email));
  const missing = [...acceptedSet].filter((email) => !counts.has(email));
  const duplicated = [...counts].filter(([, n]) => n > 1);
  const unexpected = [...counts.keys()].filter((email) => !acceptedSet.has(email));
  assert.deepEqual({ missing, duplicated, unexpected }, { missing: [], duplicated: [], unexpected: [] });
}

const isConnectionFailure = (outcome: SignupOutcome) => outcome.failure !== undefined && outcome.failure !== 'timeout';

test('SIGKILL with 100 emails in flight: a second instance delivers every one after the lease expires', async (t) => {
  const slow = await startSmtpSink(t, { latencyMs: 10_000 });
  // Short enough to keep the test short, long enough that the first instance cannot re-claim
  // its own rows before the kill.
  const env = { MAIL_LEASE_MS: '5000' };
  const first = await service(t, { ...env, SMTP_URL: slow.url });
  const prefix = `sigkill-${Date.now().toString(36)}`;
  const signups = startSignupLoad(t, { targets: [first.url], concurrency: 20, count: 100, prefix });
  await signups.done;
  assert.equal(signups.accepted().length, 100, `every signup accepted (${describeOutcomes(signups.outcomes)})`);
  const emails = signups.outcomes.map((outcome) => outcome.email);
  // All 100 are leased to the first instance and held in its memory (pool queue or SMTP socket).
  await waitUntil(async () => (await outboxStatus(prefix)).sending === 100, 5000, () => '100 rows leased');
  const metrics = await (await fetch(`${first.url}/metrics`)).text();
  assert.match(metrics, /^mailoffload_emails_in_flight 100$/m, 'the first instance holds 100 emails in flight');
  assert.equal(slow.received.length, 0);

  first.kill('SIGKILL');
  const killedAt = Date.now();
  assert.equal((await first.exited).signal, 'SIGKILL');
  assert.deepEqual(await outboxStatus(prefix), { sending: 100 }, 'nothing was released: the process had no chance');

  const fast = await startSmtpSink(t);
  const second = await service(t, { ...env, SMTP_URL: fast.url });
  await waitUntil(() => emails.every((email) => fast.to(email).length > 0), 20_000, () => `all 100 at the second sink (got ${fast.received.length})`);
  const deliveredMs = Date.now() - killedAt;
  await waitUntil(async () => (await outboxStatus(prefix)).sent === 100, 5000, () => 'all 100 rows marked sent');
  assertExactlyOncePerAccepted(fast, signups.accepted());
  await stop(second);
  console.log(`# scenario 3: 100 in flight at SIGKILL; all 100 delivered by the second instance ${deliveredMs} ms after the kill (lease 5000 ms)`);
});

test('SIGTERM under load: every 202 gets exactly one email, nothing else does, and no request hangs', async (t) => {
  const smtp = await startSmtpSink(t, { latencyMs: 50 });
  const prefix = `sigterm-load-${Date.now().toString(36)}`;
  const svc = await service(t, { SMTP_URL: smtp.url });
  const traffic = startSignupLoad(t, { targets: [svc.url], concurrency: 20, maxDurationMs: 15_000, requestTimeoutMs: 10_000, prefix });

  await waitUntil(() => traffic.accepted().length >= 300, 10_000, () => `300 accepted signups (${describeOutcomes(traffic.outcomes)})`);
  const signalledAt = Date.now();
  svc.kill('SIGTERM');
  const deliveredAtSignal = smtp.received.length;
  await svc.waitForLog('shutting down server');
  const shutdownSeenAt = Date.now();
  const { code } = await svc.exited;
  const exitedAt = Date.now();
  // Keep sending for a while after the exit: these must be refused, not hang.
  await waitUntil(() => traffic.count((o) => o.startedAt > exitedAt) >= 50, 10_000, () => 'requests after the exit');
  await traffic.stop();

  assert.equal(code, 0, svc.stderr.join(''));
  const outcomes = traffic.outcomes;
  assert.equal(traffic.count((o) => o.failure === 'timeout'), 0, 'no request hung');
  for (const o of outcomes) {
    assert.ok(o.status === 202 || o.status === 503 || isConnectionFailure(o), `unexpected outcome ${JSON.stringify(o)}`);
    if (o.status === 503) assert.deepEqual(o.body, { error: 'the server is shutting down, please retry' });
  }
  const afterSignal = outcomes.filter((o) => o.startedAt > shutdownSeenAt);
  assert.ok(afterSignal.length >= 50);
  assert.equal(afterSignal.filter((o) => o.status === 202).length, 0, 'no request sent after the shutdown began was accepted');

  // What the clean shutdown left in the outbox (if any: rows deferred by a full pool) goes to the next instance.
  const left = await outboxStatus(prefix);
  const next = await service(t, { SMTP_URL: smtp.url });
  const accepted = traffic.accepted();
  await waitUntil(() => accepted.every((o) => smtp.to(o.email).length > 0), 30_000, () => `every accepted address mailed (${smtp.received.length}/${accepted.length})`);
  await waitUntil(async () => Object.keys(await outboxStatus(prefix)).join() === 'sent', 10_000, () => 'every row sent');
  await stop(next);

  assertExactlyOncePerAccepted(smtp, accepted);
  const users = await usersWithPrefix(prefix);
  assert.equal(users.size, accepted.length, 'a user exists for every 202 and for nothing else');

  const completing = svc.logs.find((line) => line.msg === 'completing background tasks');
  const stopped = svc.logs.find((line) => line.msg === 'stopped server');
  assert.ok(Number(completing?.pending) > 0, 'the drain had emails to wait for');
  console.log(
    `# scenario 4: ${deliveredAtSignal} emails delivered when SIGTERM was sent; ${outcomes.length} requests (${describeOutcomes(outcomes)}); ${afterSignal.length} after the shutdown began: ` +
      `${describeOutcomes(afterSignal)}; pending at drain ${String(completing?.pending)}, drainMs ${String(stopped?.drainMs)}, ` +
      `exit ${exitedAt - signalledAt} ms after SIGTERM; left in the outbox for the next instance: ${JSON.stringify(left)}; ` +
      `${accepted.length} accepted, ${smtp.received.length} emails, 0 duplicates`,
  );
});

test('two instances on one database under load, one SIGTERMed: every accepted signup delivered once', async (t) => {
  const smtp = await startSmtpSink(t, { latencyMs: 20 });
  const prefix = `two-instances-${Date.now().toString(36)}`;
  // A small in-flight bound sends part of the signups through the outbox, where both sweepers compete for them.
  const env = { SMTP_URL: smtp.url, MAIL_MAX_IN_FLIGHT: '50' };
  const [a, b] = await Promise.all([service(t, env), service(t, env)]);
  const traffic = startSignupLoad(t, { targets: [a!.url, b!.url], concurrency: 20, maxDurationMs: 20_000, requestTimeoutMs: 10_000, prefix });

  await waitUntil(() => traffic.accepted().length >= 300, 10_000, () => `300 accepted signups (${describeOutcomes(traffic.outcomes)})`);
  a!.kill('SIGTERM');
  const { code } = await a!.exited;
  const aExitedAt = Date.now();
  await waitUntil(() => traffic.count((o) => o.startedAt > aExitedAt && o.target === b!.url && o.status === 202) >= 150, 10_000, () => 'B keeps accepting');
  await traffic.stop();
  assert.equal(code, 0, a!.stderr.join(''));

  const accepted = traffic.accepted();
  assert.equal(traffic.count((o) => o.failure === 'timeout'), 0, 'no request hung');
  assert.equal(traffic.count((o) => o.target === b!.url && o.status !== 202), 0, `B answered everything with 202 (${describeOutcomes(traffic.outcomes)})`);
  await waitUntil(() => accepted.every((o) => smtp.to(o.email).length > 0), 30_000, () => `every accepted address mailed (${smtp.received.length}/${accepted.length})`);
  await waitUntil(async () => Object.keys(await outboxStatus(prefix)).join() === 'sent', 10_000, () => 'every row sent');
  // Ctrl-C in a terminal: SIGINT runs the same sequence.
  await stop(b!, 'SIGINT');

  assertExactlyOncePerAccepted(smtp, accepted);
  const byA = accepted.filter((o) => o.target === a!.url).length;
  const drained = a!.logs.find((line) => line.msg === 'stopped server');
  console.log(
    `# scenario 5: ${accepted.length} accepted (${byA} by A, ${accepted.length - byA} by B), ${smtp.received.length} emails, 0 duplicates; ` +
      `A drained in ${String(drained?.drainMs)} ms; all requests: ${describeOutcomes(traffic.outcomes)}`,
  );
});
