// Provider outages against the whole service: a real SMTP server (test/support/faulty-smtp.ts) refuses
// at one SMTP step for a while and is then made healthy, with real PostgreSQL and retries sped
// up as an operator could (MAIL_RETRY_BASE_MS=200, MAIL_RETRY_MAX_MS=1000, SWEEP_INTERVAL_MS=200).
// What must hold: a provider fault never makes an email dead before the give-up age, each email
// is delivered exactly once after the recovery, the circuit breaker pauses sending and probes
// at its interval, `attempts` counts SMTP attempts only, a refused recipient is dead at once
// and can be requeued, and the give-up age works. Within each group the tests run side by
// side (each has its own database and server): most of their time is outages waited out.
// Each test reports its figures with t.diagnostic (lines starting with "#" in the output).
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import { loadConfig } from '../src/config.js';
import {
  buildTestApp,
  closeAtEnd,
  closedPort,
  CleanupStack,
  createTestDatabase,
  postJson,
  runScript,
  Scrape,
  scrape,
  startFaultySmtp,
  startSmtpSink,
  startTestService,
  TEST_CA_FILE,
  uniqueEmail,
  waitUntil,
  type CommandRun,
  type Database,
  type FaultySmtp,
  type Refusal,
} from './support/index.js';

/** The sped-up retries (the kit's TEST_ENV already sets MAIL_RETRY_BASE_MS=200 and SWEEP_INTERVAL_MS=200). */
const FAST_RETRIES = { MAIL_RETRY_BASE_MS: '200', MAIL_RETRY_MAX_MS: '1000', SWEEP_INTERVAL_MS: '200' } as const;
/** The default: consecutive provider faults that pause sending. */
const THRESHOLD = 10;

const PAUSED = 'mail provider failing; sending paused';
const RECOVERED = 'mail provider recovered';
const GAVE_UP = 'email gave up: marked dead';

const AUTH_REFUSED: Refusal = { code: 535, text: '5.7.8 Authentication credentials invalid' };
const SENDING_PAUSED: Refusal = { code: 554, text: '5.7.1 Sending paused for this account' };

// ---------------------------------------------------------------------------------------
// The service under test: in-process (buildTestApp) or the built service as a child process
// (startTestService). Each test opens its database first, then its SMTP server, then the
// service, so that the end of the test closes them the other way round: the service before
// its SMTP server, both before the database.

interface Subject {
  signup(email: string): Promise<number>;
  metrics(): Promise<Scrape>;
  health(): Promise<number>;
  logs(): readonly Record<string, unknown>[];
}

type BuiltApp = Awaited<ReturnType<typeof buildTestApp>>;

async function inProcess(t: TestContext, db: Database, env: Record<string, string>): Promise<Subject> {
  return subjectOf(await buildTestApp(t, { DATABASE_URL: db.url, ...FAST_RETRIES, ...env }));
}

function subjectOf({ app, logs }: BuiltApp): Subject {
  return {
    async signup(email) {
      const response = await app.inject({ method: 'POST', url: '/v1/users', payload: { name: 'Fault Test', email, password: 'pa55word1234' } });
      return response.statusCode;
    },
    async metrics() {
      return new Scrape((await app.inject({ method: 'GET', url: '/metrics' })).body);
    },
    async health() {
      return (await app.inject({ method: 'GET', url: '/v1/healthcheck' })).statusCode;
    },
    logs: () => logs.lines,
  };
}

async function childProcess(t: TestContext, db: Database, env: Record<string, string>): Promise<Subject> {
  const service = await startTestService(t, { DATABASE_URL: db.url, ...FAST_RETRIES, ...env });
  return {
    signup: async (email) => (await postJson(service.url, '/v1/users', { name: 'Fault Test', email, password: 'pa55word1234' })).status,
    metrics: () => scrape(service.url),
    health: async () => (await fetch(`${service.url}/v1/healthcheck`)).status,
    logs: () => service.logs,
  };
}

/** Signs up every address, five at a time (a burst, without opening twenty database connections at once). */
async function signupAll(subject: Subject, emails: readonly string[]): Promise<void> {
  const statuses: number[] = [];
  for (let i = 0; i < emails.length; i += 5) statuses.push(...(await Promise.all(emails.slice(i, i + 5).map((email) => subject.signup(email)))));
  assert.deepEqual(statuses, emails.map(() => 202), 'every signup is accepted');
}

function logsNamed(subject: Subject, msg: string): Record<string, unknown>[] {
  return subject.logs().filter((line) => line.msg === msg);
}

async function waitForLog(subject: Subject, msg: string, timeoutMs: number): Promise<Record<string, unknown>> {
  await waitUntil(() => logsNamed(subject, msg).length > 0, timeoutMs, () => `log line "${msg}"`);
  return logsNamed(subject, msg)[0]!;
}

// ---------------------------------------------------------------------------------------
// The outbox

interface Row {
  readonly id: number;
  readonly email: string;
  readonly status: string;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly leaseOwner: string | null;
}

async function outbox(db: Database): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `SELECT o.id::int AS id, u.email::text AS email, o.status, o.attempts, o.last_error AS "lastError", o.lease_owner AS "leaseOwner"
       FROM email_outbox o JOIN users u ON u.id = o.user_id ORDER BY o.id`,
  );
  return rows;
}

async function rowFor(db: Database, email: string): Promise<Row> {
  const row = (await outbox(db)).find((r) => r.email === email);
  assert.ok(row, `an outbox row for ${email}`);
  return row;
}

async function allSent(db: Database, count: number): Promise<boolean> {
  const rows = await outbox(db);
  return rows.length === count && rows.every((row) => row.status === 'sent');
}

/** Samples the number of dead rows every 100 ms until stopped; resolves with the most it saw. */
function watchDead(db: Database): () => Promise<number> {
  let stopped = false;
  let most = 0;
  const sampling = (async () => {
    while (!stopped) {
      const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox WHERE status = 'dead'");
      most = Math.max(most, rows[0]!.n);
      await delay(100);
    }
  })();
  return async () => {
    stopped = true;
    await sampling;
    return most;
  };
}

function emails(prefix: string, count: number): string[] {
  return Array.from({ length: count }, (_, i) => uniqueEmail(`${prefix}${i}`));
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------------------------------
// A 13 s fault of each kind, 20 signups, then healthy

/** How long each fault of the done-when measurement lasts, from the first signup. */
const OUTAGE_MS = 13_000;
const SIGNUPS = 20;

interface FaultCase {
  readonly name: string;
  /** The breaker's label for the step that failed. */
  readonly phase: string;
  /** Starts the faulty provider; returns the service's SMTP_URL and how to heal it. */
  setup(t: TestContext): Promise<{ smtpUrl: string; server: () => FaultySmtp | undefined; heal: () => Promise<void> }>;
  readonly childProcess?: boolean;
  readonly env?: Record<string, string>;
}

const faultCases: FaultCase[] = [
  {
    name: 'AUTH refused with 535 5.7.8 (a rotated password)',
    phase: 'auth',
    async setup(t) {
      const server = await startFaultySmtp(t, { credentials: { user: 'mailer', pass: 'n3w-pa55word' } });
      server.faults = { auth: AUTH_REFUSED };
      // Credentials over plain smtp:// are allowed to loopback (src/security.ts): no SMTP_ALLOW_INSECURE needed.
      return { smtpUrl: `smtp://mailer:n3w-pa55word@127.0.0.1:${server.port}`, server: () => server, heal: async () => server.heal() };
    },
  },
  {
    name: '554 5.7.1 "Sending paused" at MAIL FROM',
    phase: 'mail-from',
    async setup(t) {
      const server = await startFaultySmtp(t);
      server.faults = { mailFrom: SENDING_PAUSED };
      return { smtpUrl: `smtp://127.0.0.1:${server.port}`, server: () => server, heal: async () => server.heal() };
    },
  },
  {
    name: 'connection refused (nothing listening), then a server on that port',
    phase: 'connection',
    async setup(t) {
      const port = await closedPort();
      // Started by the heal, in the test's scope, after the service: so it is closed before
      // the service, and its close waits for the service's pooled connections (at most the
      // sink's one-second closeTimeout).
      let server: FaultySmtp | undefined;
      return {
        smtpUrl: `smtp://127.0.0.1:${port}`,
        server: () => server,
        heal: async () => {
          server = await startFaultySmtp(t, { port });
        },
      };
    },
  },
  {
    // requireTLS is what the service sets for plain smtp:// to a host that is not loopback
    // (src/security.ts); loopback is plain on purpose, so the URL names 0.0.0.0, which the
    // policy does not count as loopback and which Linux connects to 127.0.0.1. The recovered
    // server offers STARTTLS with the test certificate, which the service process trusts
    // through NODE_EXTRA_CA_CERTS (read only at process start, hence a child process).
    name: 'STARTTLS required by us, not offered by the server',
    phase: 'starttls',
    childProcess: true,
    env: { NODE_EXTRA_CA_CERTS: TEST_CA_FILE },
    async setup(t) {
      const server = await startFaultySmtp(t, { tls: true });
      server.faults = { noStartTls: true };
      const smtpUrl = `smtp://0.0.0.0:${server.port}`;
      assert.equal(loadConfig({ SMTP_URL: smtpUrl }).smtpRequireTls, true, 'the configuration itself requires STARTTLS for this URL');
      return { smtpUrl, server: () => server, heal: async () => server.heal() };
    },
  },
];

// Two at a time: each waits out an outage, and four services at once overload a small machine.
describe('provider faults', { concurrency: 2 }, () => {
  for (const fault of faultCases) {
    test(`${fault.name} for ${OUTAGE_MS / 1000} s (longer than ten retries), then accepted: ${SIGNUPS} signups, none dead, each delivered exactly once`, async (t) => {
      const db = await createTestDatabase(t);
      const provider = await fault.setup(t);
      const subject = await (fault.childProcess ? childProcess : inProcess)(t, db, { SMTP_URL: provider.smtpUrl, ...fault.env });
      const addresses = emails(fault.phase, SIGNUPS);

      const stopWatching = watchDead(db);
      const faultStart = Date.now();
      await signupAll(subject, addresses);

      // The breaker opens after THRESHOLD consecutive faults; signups are still answered 202.
      const paused = await waitForLog(subject, PAUSED, 20_000);
      assert.equal(paused.level, 50, 'logged as an error');
      const whilePaused = await subject.metrics();
      assert.equal(whilePaused.value('mailoffload_provider_paused'), 1);
      assert.ok((whilePaused.value('mailoffload_provider_faults_total', { phase: fault.phase }) ?? 0) >= THRESHOLD, `faults counted under phase="${fault.phase}"`);
      assert.equal(await subject.health(), 200, 'readiness stays 200 while paused');

      // The outage itself: ten retries at the fast schedule take at most 0.2+0.4+0.8+7×1 = 8.4 s.
      await delay(faultStart + OUTAGE_MS - Date.now());
      await provider.heal();
      const healedAt = Date.now();

      await waitUntil(() => allSent(db, SIGNUPS), 60_000, () => 'every email sent within 60 s of the recovery');
      const mostDead = await stopWatching();
      const server = provider.server()!;
      const lastDelivery = Math.max(...server.deliveryTimes());

      assert.equal(mostDead, 0, 'no email was dead at any time');
      for (const address of addresses) assert.equal(server.deliveredTo(address), 1, `${address} delivered exactly once`);
      assert.equal(server.sink.accepted, SIGNUPS, 'nothing else was delivered');
      assert.ok(lastDelivery - healedAt <= 60_000);
      assert.equal(logsNamed(subject, GAVE_UP).length, 0);
      assert.equal(logsNamed(subject, PAUSED).length, 1, 'paused once');
      assert.equal(logsNamed(subject, RECOVERED).length, 1, 'recovered once');
      if (fault.phase === 'starttls') {
        const accepted = server.events.filter((e) => e.step === 'data' && !e.refused);
        assert.equal(accepted.length, SIGNUPS);
        assert.ok(accepted.every((e) => e.secure === true), 'every delivery went over STARTTLS');
      }

      const after = await subject.metrics();
      assert.equal(after.value('mailoffload_provider_paused'), 0);
      const rows = await outbox(db);
      const attempts = rows.map((row) => row.attempts);
      assert.ok(attempts.every((n) => n >= 1));
      if (fault.phase === 'mail-from') {
        // Every attempt of a message issues one MAIL FROM: attempts count exactly those.
        assert.equal(attempts.reduce((a, b) => a + b, 0), server.count('mail-from'), 'attempts = MAIL FROM commands seen');
        assert.equal(after.value('mailoffload_provider_faults_total', { phase: 'mail-from' }), server.refusedCount('mail-from'));
      }
      t.diagnostic(
        `${fault.phase}: outage ${seconds(healedAt - faultStart)}, paused after ${seconds(Number(paused.time) - faultStart)}, ` +
          `dead 0/${SIGNUPS}, all delivered ${seconds(lastDelivery - healedAt)} after recovery, ` +
          `attempts max ${Math.max(...attempts)} total ${attempts.reduce((a, b) => a + b, 0)}, ` +
          `faults counted ${after.value('mailoffload_provider_faults_total', { phase: fault.phase })}`,
      );
    });
  }
});

// ---------------------------------------------------------------------------------------
// The circuit breaker's schedule, the attempts it does not spend, the account-level refusal

describe('the circuit breaker', { concurrency: true }, () => {
  test('a 15 s outage: after the threshold at most one attempt per probe interval (doubling); the pause spends no attempts; full speed on recovery', async (t) => {
    const PROBE_MS = 1000;
    // One worker with two SMTP connections: the pool holds at most 4 emails (2 per
    // connection), so at most 4 attempts can still happen once the breaker has opened.
    const POOL_WINDOW = 4;
    const db = await createTestDatabase(t);
    const server = await startFaultySmtp(t);
    // A 4xx at RCPT TO is a provider fault, and it names the recipient: the server's count of
    // RCPT TO per address is the number of SMTP attempts each email really had.
    server.faults = { rcptTo: () => ({ code: 451, text: '4.3.0 Temporary system problem, try again later' }) };
    const subject = await inProcess(t, db, {
      SMTP_URL: `smtp://127.0.0.1:${server.port}`,
      MAIL_WORKERS: '1',
      MAIL_SMTP_CONNECTIONS: '2',
      MAIL_BREAKER_PROBE_MS: String(PROBE_MS),
    });

    const first = emails('breaker', 30);
    const faultStart = Date.now();
    await signupAll(subject, first);
    const paused = await waitForLog(subject, PAUSED, 20_000);
    const openedAt = Number(paused.time);
    assert.equal(paused.failures, THRESHOLD);

    // Signups during the pause: 202, their rows born pending, never leased, no attempt.
    const during = emails('paused', 5);
    await signupAll(subject, during);
    for (const email of during) {
      const row = await rowFor(db, email);
      assert.deepEqual([row.status, row.attempts, row.leaseOwner], ['pending', 0, null], `${email} waits in the outbox`);
    }

    // The outage lasts 14 s after the opening (about 15 s in all): the probes at 1, 3 and 7 s
    // fail, the one due at 15 s finds the server healthy.
    await delay(openedAt + 14_000 - Date.now());
    const beforeHeal = await subject.metrics();
    assert.equal(beforeHeal.value('mailoffload_provider_paused'), 1);
    assert.ok((beforeHeal.value('mailoffload_emails_in_flight') ?? 99) <= 1, 'at most the probe held in memory while paused');
    assert.equal(await subject.health(), 200);
    const waiting = (await outbox(db)).filter((row) => row.attempts === 0).length;
    server.heal();
    const healedAt = Date.now();

    const everyone = [...first, ...during];
    await waitUntil(() => allSent(db, everyone.length), 60_000, () => 'every email sent after the recovery');
    const recovered = await waitForLog(subject, RECOVERED, 5_000);
    const lastDelivery = Math.max(...server.deliveryTimes());

    // Attempts during the pause: what was already in the pool, then one probe per interval.
    const attemptTimes = server.events.filter((e) => e.step === 'rcpt-to' && e.at > openedAt && e.at < healedAt).map((e) => e.at);
    const leftovers = attemptTimes.filter((at) => at < openedAt + PROBE_MS * 0.9);
    const probes = attemptTimes.filter((at) => at >= openedAt + PROBE_MS * 0.9);
    assert.ok(leftovers.length <= POOL_WINDOW, `${leftovers.length} attempts right after the opening (the pool's window)`);
    // Probe k (k = 0, 1, ...) waits PROBE_MS × 2^k after the previous failure: never two in one interval.
    const gaps = probes.map((at, i) => at - (i === 0 ? openedAt : probes[i - 1]!));
    gaps.forEach((gap, i) => assert.ok(gap >= PROBE_MS * 2 ** i * 0.95, `probe ${i + 1} came ${gap} ms after the previous attempt (interval ${PROBE_MS * 2 ** i} ms)`));
    const allowed = Math.floor(Math.log2((healedAt - openedAt) / PROBE_MS + 1)) + 1;
    assert.ok(probes.length <= allowed, `${probes.length} probes in ${seconds(healedAt - openedAt)}, at most ${allowed}`);
    // The first probe goes out one interval after the opening, not later: the attempts still in
    // the pool when it opened are not failed probes.
    assert.ok(probes.length >= 1 && gaps[0]! <= PROBE_MS + 3000, `first probe ${gaps[0]} ms after the opening`);
    assert.ok(lastDelivery - healedAt <= PROBE_MS * 2 ** probes.length + 5000, `delivered ${lastDelivery - healedAt} ms after the recovery`);

    // attempts = SMTP attempts: each email's count equals the RCPT TO commands the server saw
    // for it, so the hand-back at the opening, the pause and the claims spent nothing.
    const rows = await outbox(db);
    for (const row of rows) assert.equal(row.attempts, server.rcptCount(row.email), `${row.email}: attempts = RCPT TO seen`);
    for (const email of everyone) assert.equal(server.deliveredTo(email), 1, `${email} delivered exactly once`);
    const triedOnlyOnce = rows.filter((row) => row.attempts === 1).length;
    assert.ok(triedOnlyOnce >= during.length, `${triedOnlyOnce} emails waited out the pause and were sent at their first attempt`);
    const metrics = await subject.metrics();
    assert.equal(metrics.value('mailoffload_provider_paused'), 0);
    assert.equal(
      metrics.value('mailoffload_provider_faults_total', { phase: 'rcpt-to' }),
      server.refusedCount('rcpt-to'),
      'every refused attempt counted under phase="rcpt-to"',
    );
    t.diagnostic(
      `breaker: opened ${seconds(openedAt - faultStart)} after the first fault, outage ${seconds(healedAt - faultStart)}; ` +
        `attempts while open: ${leftovers.length} already in the pool + ${probes.length} probes (gaps ${gaps.join(', ')} ms); ` +
        `${waiting} of ${everyone.length} emails still at attempts 0 just before the recovery; all delivered ${seconds(lastDelivery - healedAt)} after it ` +
        `(paused ${seconds(Number(recovered.pausedMs))})`,
    );
  });

  test('554 at DATA for every message (a sandboxed account): the breaker opens, nothing ends dead, everything delivered once accepted again', async (t) => {
    const db = await createTestDatabase(t);
    const server = await startFaultySmtp(t);
    server.faults = { data: { code: 554, text: '5.7.1 Message rejected: Email address is not verified' } };
    const subject = await inProcess(t, db, { SMTP_URL: `smtp://127.0.0.1:${server.port}`, MAIL_BREAKER_PROBE_MS: '500' });

    const addresses = emails('sandboxed', 12);
    await signupAll(subject, addresses);
    await waitForLog(subject, PAUSED, 20_000);
    // Until the breaker opened, each refusal looked permanent and its email died; the opening
    // gives them back. Then two more probes are refused while open: not permanent either.
    const refusedAtOpen = server.count('data');
    await waitUntil(() => server.count('data') >= refusedAtOpen + 2, 20_000, () => 'two probes refused');
    await waitUntil(async () => (await outbox(db)).every((row) => row.status !== 'dead'), 10_000, () => 'the emails made dead before the opening revived');
    const revived = logsNamed(subject, 'emails refused during the provider failure are pending again');
    assert.equal(revived.length, 1);
    const stillRefusing = await outbox(db);
    assert.equal(stillRefusing.filter((row) => row.status === 'dead').length, 0);

    server.heal();
    await waitUntil(() => allSent(db, addresses.length), 60_000, () => 'every email sent once DATA is accepted');
    for (const address of addresses) assert.equal(server.deliveredTo(address), 1, `${address} delivered exactly once`);
    const rows = await outbox(db);
    for (const row of rows) assert.equal(row.attempts, server.rcptCount(row.email), `${row.email}: attempts = RCPT TO seen`);
    const metrics = await subject.metrics();
    assert.equal(metrics.value('mailoffload_provider_faults_total', { phase: 'data' }), server.refusedCount('data'));
    t.diagnostic(`data 554: ${revived[0]!.revived} emails made dead before the opening were revived; 0/${addresses.length} dead; attempts max ${Math.max(...rows.map((r) => r.attempts))}`);
  });
});

// ---------------------------------------------------------------------------------------
// Dead letters, the give-up age, and attempts that were never made

/** The built `npm run outbox` command, with only the environment given (and PATH). */
function outboxCli(args: readonly string[], env: Record<string, string>): Promise<CommandRun> {
  return runScript('scripts/outbox.js', args, env, 60_000);
}

describe('dead letters and attempts', { concurrency: true }, () => {
  test('550 at RCPT TO for one address: dead within seconds with the reply, the others delivered; `outbox requeue --id` delivers it once the address is accepted', async (t) => {
    const db = await createTestDatabase(t);
    const server = await startFaultySmtp(t);
    const unknown = uniqueEmail('unknown');
    const reply: Refusal = { code: 550, text: `5.1.1 <${unknown}>: Recipient address rejected: User unknown in virtual mailbox table` };
    server.faults = { rcptTo: (address) => (address === unknown ? reply : undefined) };
    const subject = await inProcess(t, db, { SMTP_URL: `smtp://127.0.0.1:${server.port}` });

    const others = emails('known', 4);
    const signedUpAt = Date.now();
    await signupAll(subject, [unknown, ...others]);
    await waitUntil(async () => (await rowFor(db, unknown)).status === 'dead', 10_000, () => `${unknown} dead`);
    const deadAfterMs = Date.now() - signedUpAt;
    await waitUntil(async () => (await outbox(db)).filter((row) => row.status === 'sent').length === others.length, 10_000, () => 'the other emails sent');

    const dead = await rowFor(db, unknown);
    assert.equal(dead.attempts, 1);
    assert.ok(dead.lastError?.includes('550') && dead.lastError.includes('User unknown in virtual mailbox table'), `last_error holds the reply: ${dead.lastError}`);
    assert.match(dead.lastError ?? '', /RCPT TO/);
    for (const address of others) assert.equal(server.deliveredTo(address), 1, `${address} delivered once`);
    assert.equal(server.deliveredTo(unknown), 0);
    assert.equal(logsNamed(subject, GAVE_UP).length, 1);
    assert.equal(logsNamed(subject, PAUSED).length, 0, 'one refused recipient does not pause sending');

    // The mailbox now exists. Requeue it as an operator would, with the built command.
    server.heal();
    assert.equal(server.rcptCount(unknown), 1, 'a dead email is never retried by itself');
    const run = await outboxCli(['requeue', '--id', String(dead.id)], { DATABASE_URL: db.url });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout, `requeued 1 dead email (id ${dead.id}): pending, due now\n`);
    const requeuedAt = Date.now();
    await waitUntil(async () => (await rowFor(db, unknown)).status === 'sent', 10_000, () => `${unknown} sent after the requeue`);
    const sentAfterMs = Date.now() - requeuedAt;
    assert.equal(server.deliveredTo(unknown), 1, 'delivered exactly once');
    const sent = await rowFor(db, unknown);
    assert.equal(sent.attempts, 1, 'the requeue started the count again; one attempt delivered it');
    assert.equal(sent.lastError, null);
    t.diagnostic(`rcpt 550: dead ${seconds(deadAfterMs)} after the signup (1 attempt), 4/4 others delivered; after the requeue delivered in ${seconds(sentAfterMs)}`);
  });

  test('giving up by age: with MAIL_GIVE_UP_AFTER_MS=3000 and a fault that never ends, the email is dead with the last reason after several attempts', async (t) => {
    const GIVE_UP_MS = 3000;
    const db = await createTestDatabase(t);
    const server = await startFaultySmtp(t);
    server.faults = { mailFrom: SENDING_PAUSED };
    const subject = await inProcess(t, db, { SMTP_URL: `smtp://127.0.0.1:${server.port}`, MAIL_GIVE_UP_AFTER_MS: String(GIVE_UP_MS) });

    const email = uniqueEmail('forever');
    await signupAll(subject, [email]);
    await waitUntil(async () => (await rowFor(db, email)).status === 'dead', 20_000, () => `${email} dead by age`);
    const row = await rowFor(db, email);
    const { rows } = await db.pool.query<{ ms: number }>(
      'SELECT extract(epoch FROM updated_at - retry_window_start)::float8 * 1000 AS ms FROM email_outbox WHERE id = $1',
      [row.id],
    );
    const diedAtMs = rows[0]!.ms;
    assert.ok(diedAtMs >= GIVE_UP_MS, `dead ${diedAtMs} ms into its retry window, not before ${GIVE_UP_MS}`);
    // The failure after the age: at most one retry interval (MAIL_RETRY_MAX_MS) late, with slack for a loaded machine.
    assert.ok(diedAtMs <= GIVE_UP_MS + 1000 + 3000, `dead ${diedAtMs} ms into its retry window`);
    assert.ok(row.attempts >= 3, `several attempts before giving up: ${row.attempts}`);
    assert.equal(row.attempts, server.count('mail-from'), 'attempts = MAIL FROM commands seen');
    assert.ok(row.lastError?.includes('554') && row.lastError.includes('Sending paused for this account') && row.lastError.includes('MAIL FROM'), `the last reason: ${row.lastError}`);
    const gaveUp = logsNamed(subject, GAVE_UP);
    assert.equal(gaveUp.length, 1);
    assert.equal(gaveUp[0]!.attempt, row.attempts);
    t.diagnostic(`give-up: dead ${seconds(diedAtMs)} into its retry window after ${row.attempts} attempts; last_error "${row.lastError}"`);
  });

  test('emails claimed and handed back unsent keep attempts at 0: a shutdown hand-back under load, then a crashed instance\'s expired leases; each later sent at attempts 1', async (t) => {
    const db = await createTestDatabase(t);
    // Slow enough that most emails are still waiting when the first instance shuts down.
    const sink = await startSmtpSink(t, { latencyMs: 2500 });
    // One SMTP connection: two emails in the pool at a time, the rest in the dispatcher's queue.
    const env = { DATABASE_URL: db.url, SMTP_URL: sink.url, ...FAST_RETRIES, MAIL_WORKERS: '1', MAIL_SMTP_CONNECTIONS: '1' };
    // The first instance is shut down halfway through: it gets a scope of its own, closed by
    // the test (or at the test's end, should an assertion fail first).
    const firstScope = new CleanupStack();
    closeAtEnd(t, () => firstScope.run());
    const first = await buildTestApp(firstScope, env);

    const addresses = emails('handback', 40);
    await signupAll(subjectOf(first), addresses);
    await waitUntil(() => sink.dataStarted >= 1, 10_000, () => 'the first email on the wire');
    // Shutdown: what is not on the wire goes back to the outbox; the drain waits for the rest.
    await firstScope.run();

    const afterShutdown = await outbox(db);
    const handedBack = afterShutdown.filter((row) => row.status !== 'sent');
    assert.ok(handedBack.length >= 20, `${handedBack.length} emails handed back`);
    for (const row of handedBack) assert.deepEqual([row.status, row.attempts, row.leaseOwner], ['pending', 0, null], `${row.email} handed back unsent`);

    // Ten of them as a crashed instance leaves them: leased, lease expired.
    const crashed = handedBack.slice(0, 10).map((row) => row.id);
    await db.pool.query(
      `UPDATE email_outbox SET status = 'sending', lease_owner = 'crashed-instance', lease_generation = lease_generation + 1,
              lease_expires_at = now() - interval '1 second' WHERE id = ANY($1::int[])`,
      [crashed],
    );

    sink.behaviour.latencyMs = 0;
    await buildTestApp(t, env);
    await waitUntil(() => allSent(db, addresses.length), 30_000, () => 'every email sent by the second instance');
    for (const address of addresses) assert.equal(sink.to(address).length, 1, `${address} delivered exactly once`);
    const rows = await outbox(db);
    assert.deepEqual(
      rows.filter((row) => row.attempts !== 1).map((row) => `${row.email}: ${row.attempts}`),
      [],
      'every email was sent at its first SMTP attempt, whatever claims and releases it went through',
    );
    t.diagnostic(`hand-back: ${handedBack.length} of ${addresses.length} handed back at shutdown with attempts 0 (10 of them then left as expired leases); all sent at attempts 1`);
  });
});
