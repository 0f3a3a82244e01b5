// The provider's send-rate quota (MAIL_RATE_PER_SECOND), shared by every instance through
// PostgreSQL, and throttling replies that slow every instance down. Real compiled services
// (child processes) on one real PostgreSQL, a real SMTP server that counts what it accepts
// per second and, in one test, throttles above a rate as Amazon SES does.
import assert from 'node:assert/strict';
import { setPriority } from 'node:os';
import { before, test, type TestContext } from 'node:test';
import {
  createTestDatabase,
  file,
  insertPendingEmails,
  numberedUsers,
  postJson,
  startSmtpSink,
  startTestService,
  unique,
  waitUntil,
  type Database,
  type ReceivedMail,
  type ServiceProcess,
} from './support/index.js';

let db: Database;

/** A service on this file's database, stopped when the test ends (a failed test leaves none sending). */
const service = (t: TestContext, env: Record<string, string>) => startTestService(t, { DATABASE_URL: db.url, ...env });

before(async () => {
  db = await createTestDatabase(file);
  // This process is also the SMTP server whose clock measures the rate: on two cores shared
  // with three services and PostgreSQL, a starved server would read a steady rate as bursts
  // (messages sent during a stall all time-stamped when it ends). Run it ahead of them.
  try {
    setPriority(-10);
  } catch {
    // Not permitted (not root): the measurement is noisier, the bounds are the same.
  }
});

/** The most messages accepted in any one-second window (and when it began), and the average rate from first to last. */
function rates(mails: readonly ReceivedMail[]): { maxPerSecond: number; busiestAt: number; average: number; spanMs: number } {
  const times = mails.map((mail) => mail.receivedAt).sort((a, b) => a - b);
  let maxPerSecond = 0;
  let busiestAt = 0;
  let start = 0;
  for (let end = 0; end < times.length; end++) {
    while (times[end]! - times[start]! >= 1000) start++;
    if (end - start + 1 > maxPerSecond) {
      maxPerSecond = end - start + 1;
      busiestAt = times[start]! - times[0]!;
    }
  }
  const spanMs = times.length > 1 ? times.at(-1)! - times[0]! : 0;
  return { maxPerSecond, busiestAt, average: spanMs > 0 ? ((times.length - 1) * 1000) / spanMs : 0, spanMs };
}

/** `count` pending outbox rows (users included), due now: a backlog the sweepers take. */
async function insertPending(prefix: string, count: number): Promise<string[]> {
  const users = numberedUsers(prefix, count, 'Quota');
  await insertPendingEmails(db.pool, users);
  return users.map((user) => user.email);
}

function exactlyOnce(mails: readonly ReceivedMail[], emails: readonly string[]): string[] {
  const copies = new Map<string, number>();
  for (const mail of mails) for (const rcpt of mail.envelopeTo) copies.set(rcpt, (copies.get(rcpt) ?? 0) + 1);
  return emails.filter((email) => copies.get(email) !== 1);
}

async function stopAll(services: readonly ServiceProcess[]): Promise<void> {
  for (const svc of services) svc.kill('SIGTERM');
  for (const svc of services) assert.equal((await svc.exited).code, 0);
}

async function metric(svc: ServiceProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${svc.port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} exported`);
  return Number(line.split(' ')[1]);
}

/**
 * What the design lets a provider see in one second at 40/s from three instances: permits flow
 * at 95 % of the rate (38), the shared bucket holds at most a tenth of a second's worth (4),
 * and each instance may have its pool window of emails (40/s x 75 ms: 3) already permitted when
 * a stall of its thread, of the machine or of the SMTP server ends, and those then arrive
 * together: 38 + 4 + 3 x 3 = 51.
 */
const MAX_IN_ONE_SECOND = 51;

test('three instances at MAIL_RATE_PER_SECOND=40 share the quota: no second over the permits plus one pool window each (127 %), the burst at 85 % or more, each email once', async (t) => {
  const smtp = await startSmtpSink(t);
  const env = { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '40', MAIL_WORKERS: '1' };
  const services = await Promise.all([service(t, env), service(t, env), service(t, env)]);
  const prefix = unique('quota');
  const emails = Array.from({ length: 900 }, (_, i) => `${prefix}-${i}@example.com`);
  // 900 signups (a burst of over 20 s at 40/s) spread over the three instances, two at a time
  // each (more would stall this process, which is also the SMTP server whose clock measures the
  // rate).
  let next = 0;
  const client = async (svc: ServiceProcess) => {
    while (next < emails.length) {
      const email = emails[next++]!;
      const { status } = await postJson(`http://127.0.0.1:${svc.port}`, '/v1/users', { name: 'Quota', email, password: 'pa55word1234' });
      assert.equal(status, 202);
    }
  };
  await Promise.all(services.flatMap((svc) => Array.from({ length: 2 }, () => client(svc))));
  // From here every signup is accepted and a backlog waits: the instances may now send flat out,
  // so the average counts from this moment (before it, the signups share the two cores).
  const backlogFrom = Date.now();
  await waitUntil(() => smtp.received.length >= emails.length, 60_000, () => `900 emails, got ${smtp.received.length}`);

  const { maxPerSecond, busiestAt, spanMs } = rates(smtp.received);
  const { average } = rates(smtp.received.filter((mail) => mail.receivedAt >= backlogFrom));
  const perSecond = new Map<number, number>();
  const t0 = Math.min(...smtp.received.map((m) => m.receivedAt));
  for (const mail of smtp.received) perSecond.set(Math.floor((mail.receivedAt - t0) / 1000), (perSecond.get(Math.floor((mail.receivedAt - t0) / 1000)) ?? 0) + 1);
  console.log(`# quota 40/s, 3 instances: max ${maxPerSecond} in one second (from ${busiestAt} ms) over ${spanMs} ms, average ${average.toFixed(1)}/s once the backlog was queued; per second ${[...perSecond.values()].join(' ')}`);
  assert.ok(maxPerSecond <= MAX_IN_ONE_SECOND, `at most ${MAX_IN_ONE_SECOND} in any one-second window, saw ${maxPerSecond}`);
  assert.ok(average >= 34, `at least 85 % of 40 on average while the backlog lasts, saw ${average.toFixed(1)}`);
  assert.deepEqual(exactlyOnce(smtp.received, emails), [], 'every email exactly once');
  assert.equal(await metric(services[0]!, 'mailoffload_send_rate_configured'), 40);
  assert.ok((await metric(services[0]!, 'mailoffload_send_permit_wait_seconds_total')) > 0, 'time spent waiting for permits is counted');
  await stopAll(services);
});

test('one instance alone keeps the configured rate: 500 emails at MAIL_RATE_PER_SECOND=100, at least 85/s, no second over the permits plus its pool window', async (t) => {
  const smtp = await startSmtpSink(t);
  const emails = await insertPending(unique('alone'), 500);
  const svc = await service(t, { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '100', MAIL_WORKERS: '1' });
  await waitUntil(() => smtp.received.length >= emails.length, 30_000, () => `500 emails, got ${smtp.received.length}`);
  const { maxPerSecond, average, spanMs } = rates(smtp.received);
  console.log(`# quota 100/s, 1 instance: average ${average.toFixed(1)}/s over ${spanMs} ms, max ${maxPerSecond} in one second`);
  // An instance asks for permits at most every 25 ms, only for what its pool has room for now:
  // if those small grants did not add up to the rate, one instance alone would send below it.
  assert.ok(average >= 85, `at least 85 % of 100 on average, saw ${average.toFixed(1)}`);
  // 95 % of the rate, the bucket (a tenth of a second: 10), the pool window (100/s x 75 ms: 8).
  assert.ok(maxPerSecond <= 113, `at most 113 in any one-second window, saw ${maxPerSecond}`);
  assert.deepEqual(exactlyOnce(smtp.received, emails), [], 'every email exactly once');
  await stopAll([svc]);
});

test('a provider that throttles above 30/s, no rate configured: at most 25 % of DATA commands throttled, nothing dead', async (t) => {
  // The server accepts at most 30 messages in any one-second window and answers SES's reply above it.
  const accepted: number[] = [];
  let dataCommands = 0;
  let throttled = 0;
  const smtp = await startSmtpSink(t, {
    reply: () => {
      dataCommands++;
      const now = Date.now();
      while (accepted.length > 0 && now - accepted[0]! >= 1000) accepted.shift();
      if (accepted.length >= 30) {
        throttled++;
        return { code: 454, text: 'Throttling failure: Maximum sending rate exceeded.' };
      }
      accepted.push(now);
      return undefined;
    },
  });
  const env = { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '0', MAIL_RETRY_BASE_MS: '200' };
  const emails = await insertPending(unique('throttle'), 400);
  const services = [await service(t, env), await service(t, env)];
  await waitUntil(() => smtp.received.length >= emails.length, 60_000, () => `400 emails, got ${smtp.received.length}`);

  const share = throttled / dataCommands;
  console.log(`# throttling provider (30/s), 2 instances, no rate set: ${throttled} of ${dataCommands} DATA commands throttled (${(share * 100).toFixed(1)} %), ${rates(smtp.received).average.toFixed(1)}/s`);
  assert.ok(share <= 0.25, `at most 25 % throttled, saw ${(share * 100).toFixed(1)} %`);
  const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox WHERE status = 'dead'");
  assert.equal(rows[0]!.n, 0, 'nothing dead');
  assert.deepEqual(exactlyOnce(smtp.received, emails), [], 'every email exactly once');
  assert.ok((await metric(services[0]!, 'mailoffload_throttled_replies_total')) + (await metric(services[1]!, 'mailoffload_throttled_replies_total')) === throttled, 'throttled replies counted');
  await stopAll(services);
});

test('a restart with a different rate takes the new rate', async (t) => {
  const smtp = await startSmtpSink(t);
  const slow = await insertPending(unique('rate-10'), 30);
  const first = await service(t, { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '10' });
  await waitUntil(() => slow.every((email) => smtp.to(email).length === 1), 20_000, () => '30 emails at 10/s');
  const atTen = rates(smtp.received.filter((mail) => slow.includes(mail.envelopeTo[0]!)));
  assert.equal(await metric(first, 'mailoffload_send_rate_effective'), 10);
  await stopAll([first]);

  const fast = await insertPending(unique('rate-100'), 30);
  const second = await service(t, { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '100' });
  await waitUntil(() => fast.every((email) => smtp.to(email).length === 1), 20_000, () => '30 emails at 100/s');
  const atHundred = rates(smtp.received.filter((mail) => fast.includes(mail.envelopeTo[0]!)));
  assert.equal(await metric(second, 'mailoffload_send_rate_effective'), 100);
  const { rows } = await db.pool.query<{ rate: number }>('SELECT rate FROM send_quota');
  assert.equal(rows[0]!.rate, 100, 'the shared row holds the new rate');
  console.log(`# restart: 30 emails at 10/s took ${atTen.spanMs} ms (max ${atTen.maxPerSecond} in a second); at 100/s ${atHundred.spanMs} ms`);
  assert.ok(atTen.maxPerSecond <= 12, `10/s kept: ${atTen.maxPerSecond} in one second`);
  assert.ok(atTen.spanMs >= 2000, `30 emails at 10/s take about 3 s, took ${atTen.spanMs} ms`);
  assert.ok(atHundred.spanMs < atTen.spanMs / 2, `the new rate is faster: ${atHundred.spanMs} ms vs ${atTen.spanMs} ms`);
  await stopAll([second]);
});

test('rate 0 sends at full speed: no permit is ever waited for and the shared rate stays unlimited', async (t) => {
  const smtp = await startSmtpSink(t);
  const emails = await insertPending(unique('unlimited'), 300);
  const svc = await service(t, { SMTP_URL: smtp.url, MAIL_RATE_PER_SECOND: '0' });
  await waitUntil(() => emails.every((email) => smtp.to(email).length === 1), 30_000, () => '300 emails');
  const { maxPerSecond, average } = rates(smtp.received.filter((mail) => emails.includes(mail.envelopeTo[0]!)));
  console.log(`# rate 0: 300 emails at ${average.toFixed(0)}/s (max ${maxPerSecond} in one second)`);
  assert.equal(await metric(svc, 'mailoffload_send_permit_wait_seconds_total'), 0);
  assert.equal(await metric(svc, 'mailoffload_send_rate_effective'), 0, 'unlimited');
  assert.ok(maxPerSecond > 46, `well above any quota tested here: ${maxPerSecond} in one second`);
  await stopAll([svc]);
});
