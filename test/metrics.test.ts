// GET /metrics: the names operators watch are there, with values that follow what happened:
// a delivered signup, a permanent failure (dead) and a temporary one (retried).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { buildTestApp, createTestDatabase, file, Scrape, startSmtpSink, uniqueEmail, waitUntil, type Database, type SmtpSink, type TestApp } from './support/index.js';

let db: Database;
let smtp: SmtpSink;
let app: TestApp;

before(async () => {
  db = await createTestDatabase(file);
  // Addresses starting with "perm" get 550 (permanent), "temp" get 451 (temporary).
  smtp = await startSmtpSink(file, {
    reply: (_session, rcpt) => (rcpt.some((r) => r.startsWith('perm')) ? 550 : rcpt.some((r) => r.startsWith('temp')) ? 451 : undefined),
  });
  ({ app } = await buildTestApp(file, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_MAX_ATTEMPTS: '3' }));
});

async function metrics(): Promise<Scrape> {
  const response = await app.inject({ method: 'GET', url: '/metrics' });
  assert.equal(response.statusCode, 200);
  assert.match(String(response.headers['content-type']), /^text\/plain/);
  return new Scrape(response.body);
}

async function signup(email: string): Promise<void> {
  const response = await app.inject({ method: 'POST', url: '/v1/users', payload: { name: 'Metrics Test', email, password: 'pa55word1234' } });
  assert.equal(response.statusCode, 202);
}

function outboxStatus(email: string): Promise<string | undefined> {
  return db.pool
    .query('SELECT o.status FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email = $1', [email])
    .then(({ rows }) => rows[0]?.status);
}

test('a delivered signup shows in the counters, histograms and gauges', async () => {
  const email = uniqueEmail('metrics');
  await signup(email);
  await waitUntil(() => smtp.to(email).length === 1, 10_000, () => `welcome email to ${email}`);
  await waitUntil(async () => (await outboxStatus(email)) === 'sent', 10_000, () => 'outbox row marked sent');
  // The row is visible as sent the moment PostgreSQL commits, a moment before the service has
  // read the UPDATE's answer and let the task go: wait for that too, then read everything.
  let m = await metrics();
  await waitUntil(async () => (m = await metrics()).value('mailoffload_task_group_pending') === 0, 5_000, () => 'the task settled');

  assert.ok((m.value('mailoffload_emails_sent_total') ?? 0) >= 1, 'emails sent counted');
  assert.ok((m.value('mailoffload_email_send_duration_seconds_count') ?? 0) >= 1, 'send duration observed');
  assert.ok((m.value('mailoffload_email_send_duration_seconds_sum') ?? -1) > 0, 'send duration has a positive sum');
  assert.ok((m.value('mailoffload_signup_duration_seconds_count') ?? 0) >= 1, 'signup duration observed');
  assert.equal(m.types.get('mailoffload_signup_duration_seconds'), 'histogram');
  assert.equal(m.types.get('mailoffload_email_send_duration_seconds'), 'histogram');

  for (const status of ['pending', 'sending', 'dead']) {
    const value = m.value(`mailoffload_outbox_${status}`);
    assert.ok(value !== undefined && value >= 0, `outbox ${status} gauge present (${value})`);
  }
  assert.equal(m.value('mailoffload_outbox_sending'), 0, 'nothing left leased once delivered');
  assert.equal(m.value('mailoffload_pool_threads'), 2, 'MAIL_WORKERS=2 threads');
  assert.equal(m.value('mailoffload_pool_queue_size'), 0);
  const utilization = m.value('mailoffload_pool_utilization');
  assert.ok(utilization !== undefined && utilization >= 0 && utilization <= 1, `pool utilisation in [0, 1] (${utilization})`);
  assert.equal(m.value('mailoffload_task_group_pending'), 0, 'no task pending once delivered');
  assert.ok(m.has('mailoffload_last_drain_duration_seconds'));

  // Default process metrics: CPU of every thread, RSS, event-loop lag (prom-client's and ours).
  assert.ok((m.value('process_cpu_seconds_total') ?? 0) > 0);
  assert.ok((m.value('process_resident_memory_bytes') ?? 0) > 10 * 1024 * 1024);
  assert.ok(m.has('nodejs_eventloop_lag_p99_seconds'));
  assert.ok((m.value('mailoffload_eventloop_delay_seconds_count') ?? 0) > 0, 'event-loop delay sampled');
  assert.ok((m.value('mailoffload_eventloop_delay_seconds_sum') ?? -1) >= 0);
});

test('a permanent failure counts as failed and dead; a temporary one as failed and retried', async () => {
  const before = await metrics();
  const permanent = uniqueEmail('perm');
  const temporary = uniqueEmail('temp');
  await signup(permanent);
  await signup(temporary);

  await waitUntil(async () => (await outboxStatus(permanent)) === 'dead', 10_000, () => 'permanent failure marked dead');
  // MAIL_MAX_ATTEMPTS=3 with 200 ms base backoff: two retries, then dead.
  await waitUntil(async () => (await outboxStatus(temporary)) === 'dead', 15_000, () => 'temporary failure retried until dead');
  const m = await metrics();

  const delta = (name: string, labels: Record<string, string>) => (m.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0);
  assert.equal(delta('mailoffload_emails_failed_total', { kind: 'permanent' }), 1, 'one permanent failure');
  assert.equal(delta('mailoffload_emails_failed_total', { kind: 'provider' }), 3, 'three temporary failures (3 attempts)');
  assert.equal(delta('mailoffload_emails_retried_total', {}), 2, 'the temporary failure was retried twice');
  assert.equal(delta('mailoffload_emails_dead_total', {}), 2, 'both ended dead');
  assert.equal(delta('mailoffload_emails_sent_total', {}), 0);
  // The reason label carries the error code, as nodemailer classifies it.
  const reasons = m.samples.filter((s) => s.name === 'mailoffload_emails_retried_total').map((s) => s.labels.reason);
  assert.ok(reasons.length > 0 && reasons.every((r) => typeof r === 'string' && r.length > 0), `retry reasons labelled: ${reasons}`);
  // The outbox gauges share one count query, cached for a second.
  await waitUntil(async () => ((await metrics()).value('mailoffload_outbox_dead') ?? 0) >= 2, 5_000, () => 'outbox dead gauge shows both');
  assert.equal(smtp.to(permanent).length + smtp.to(temporary).length, 0, 'the sink accepted neither');
});
