// PostgreSQL goes away under load and comes back on the same port: the real compiled service
// (a child process) must not crash, must answer 503 JSON to what needs the database, must not
// lose the email of any signup it accepted, and must recover without a restart. This file
// runs its own PostgreSQL (embedded, in a temporary folder) so the test can stop and start it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import pg from 'pg';
import { startEmbeddedPostgres } from '../src/db/embedded-postgres.js';
import { createLogger } from '../src/logger.js';
import { closeAtEnd, describeOutcomes, startSignupLoad, startSmtpSink, startTestService, tempDir, waitUntil } from './support/index.js';

const log = createLogger('warn');

test('PostgreSQL stopped under load and restarted: 503 JSON meanwhile, no crash, no accepted email lost, healthy again by itself', async (t) => {
  // Open to the `postgres` user, who runs PostgreSQL when we are root.
  const dataDir = tempDir(t, 'outage');
  // This test stops and restarts the server itself; whichever one runs at the end is stopped.
  let database = await startEmbeddedPostgres(dataDir, log);
  closeAtEnd(t, () => database.stop());
  const { url } = database;
  const port = Number(new URL(url).port);

  const smtp = await startSmtpSink(t);
  // The default 60 s lease: a result that could not be recorded during the outage must be
  // recorded by the dispatcher's own retries when the database is back, not by a resend after
  // the lease expires (that would be a duplicate, and a wait far longer than this test allows).
  const svc = await startTestService(t, { DATABASE_URL: url, SMTP_URL: smtp.url });
  const prefix = `outage-${Date.now().toString(36)}`;
  const load = startSignupLoad(t, { targets: [svc.url], concurrency: 10, maxDurationMs: 40_000, requestTimeoutMs: 10_000, prefix });

  await waitUntil(() => load.accepted().length >= 100, 10_000, () => `100 accepted before the outage (${describeOutcomes(load.outcomes)})`);
  await database.stop();
  const stoppedAt = Date.now();
  // The outage lasts at least 3 s and until the API has answered at least 20 requests during it.
  await waitUntil(
    () => Date.now() - stoppedAt >= 3000 && load.count((o) => o.startedAt > stoppedAt && o.status === 503) >= 20,
    15_000,
    () => `503s during the outage (${describeOutcomes(load.outcomes.filter((o) => o.startedAt > stoppedAt))})`,
  );
  assert.equal(svc.child.exitCode, null, 'the service is still running with its database gone');
  const health = await fetch(`${svc.url}/v1/healthcheck`, { signal: AbortSignal.timeout(5000) });
  assert.equal(health.status, 200, 'the process itself stays up (liveness)');

  database = await startEmbeddedPostgres(dataDir, log, { port });
  const restartedAt = Date.now();
  const outageMs = restartedAt - stoppedAt;
  await waitUntil(() => load.count((o) => o.startedAt > restartedAt && o.status === 202) >= 100, 20_000, () => 'signups accepted again after the restart');
  const firstAccepted = load.outcomes.filter((o) => o.startedAt > restartedAt && o.status === 202).sort((x, y) => x.startedAt - y.startedAt)[0]!;
  const recoveredMs = firstAccepted.startedAt + firstAccepted.elapsedMs - restartedAt;
  await load.stop();

  const outcomes = load.outcomes;
  assert.equal(load.count((o) => o.failure !== undefined), 0, `every request got an answer, none hung (${describeOutcomes(outcomes)})`);
  const refused = outcomes.filter((o) => o.status !== 202);
  for (const o of refused) {
    assert.equal(o.status, 503, `a request during the outage: ${JSON.stringify(o)}`);
    assert.deepEqual(o.body, { error: 'the database is unavailable, please try again shortly' });
  }

  // Every accepted signup gets its email.
  const accepted = load.accepted();
  await waitUntil(() => accepted.every((o) => smtp.to(o.email).length > 0), 45_000, () => `every accepted address mailed (${smtp.received.length}/${accepted.length})`);
  const check = new pg.Client({ connectionString: url });
  await check.connect();
  try {
    await waitUntil(
      async () => (await check.query("SELECT count(*)::int AS n FROM email_outbox WHERE status <> 'sent'")).rows[0].n === 0,
      20_000,
      () => 'every outbox row sent',
    );
    const { rows } = await check.query<{ n: number }>("SELECT count(*)::int AS n FROM users WHERE email LIKE $1 || '%'", [prefix]);
    // A 503 whose INSERT had committed before the connection dropped would show up here.
    const usersWithout202 = rows[0]!.n - accepted.length;
    assert.ok(usersWithout202 >= 0);
    const duplicates = [...smtp.byRecipient.values()].filter((n) => n > 1).length;
    assert.equal(duplicates, 0, 'results sent during the outage were recorded once it ended, not sent again');

    assert.equal(svc.child.exitCode, null, 'no restart was needed');
    svc.kill('SIGTERM');
    const { code } = await svc.exited;
    assert.equal(code, 0);
    const sweepErrors = svc.logs.filter((line) => line.msg === 'background task failed').length;
    console.log(
      `# scenario 6: outage ${outageMs} ms; requests ${describeOutcomes(outcomes)}; first 202 ${recoveredMs} ms after PostgreSQL was back; ` +
        `${accepted.length} accepted, all delivered once (${usersWithout202} users created behind a 503); ` +
        `${sweepErrors} background failures logged and survived`,
    );
  } finally {
    await check.end();
  }
});
