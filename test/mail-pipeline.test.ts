// The mail pipeline end to end: outbox -> sweeper/dispatcher -> Piscina worker -> nodemailer ->
// a real SMTP server, with real PostgreSQL. Failures are injected at the SMTP server (reply
// codes, latency, being down) and in the pool (a thread terminated mid-task).
import assert from 'node:assert/strict';
import { createHash, createVerify, generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:net';
import { before, test, type TestContext } from 'node:test';
import {
  buildTestApp,
  createTestDatabase,
  describeOutcomes,
  file,
  insertPendingEmail,
  insertPendingEmails,
  listen,
  numberedUsers,
  startSignupLoad,
  startSmtpSink,
 
  unique,
  uniqueEmail,
  waitUntil,
  type Database,
  type SmtpSink,
  type TestApp,
} from './support/index.js';

let db: Database;

before(async () => {
  db = await createTestDatabase(file);
});

/** Opens an app (and a sink, unless given) for one test; both are closed when the test ends, pass or fail. */
async function withApp(t: TestContext, env: Record<string, string>, sink?: SmtpSink): Promise<{ app: TestApp; smtp: SmtpSink }> {
  const smtp = sink ?? (await startSmtpSink(t));
  const { app } = await buildTestApp(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, ...env });
  return { app, smtp };
}

async function outboxRow(outboxId: number) {
  const { rows } = await db.pool.query<{ status: string; attempts: number; last_error: string | null; message_id: string | null }>(
    'SELECT status, attempts, last_error, message_id FROM email_outbox WHERE id = $1',
    [outboxId],
  );
  return rows[0]!;
}

async function outboxRowFor(email: string) {
  const { rows } = await db.pool.query<{ id: number }>('SELECT o.id FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email = $1', [email]);
  assert.equal(rows.length, 1, `one outbox row for ${email}`);
  return Number(rows[0]!.id);
}

async function signup(app: TestApp, email: string, name = 'Test User'): Promise<void> {
  const response = await app.inject({ method: 'POST', url: '/v1/users', payload: { name, email, password: 'pa55word1234' } });
  assert.equal(response.statusCode, 202, response.body);
}

test('a CR/LF in the name adds no header and no recipient: one envelope recipient, no Bcc, the name in no header', async (t) => {
  const { smtp } = await withApp(t, {});
  const email = uniqueEmail('inject');
  // The API rejects control characters, so the row goes in by SQL: the worker must hold anyway.
  const { outboxId } = await insertPendingEmail(db.pool, 'Eve\r\nBcc: evil@example.com', email);

  await waitUntil(() => smtp.received.some((mail) => mail.envelopeTo.includes(email)), 10_000, () => `the sweeper's email to ${email}`);
  const mails = smtp.to(email);
  assert.equal(mails.length, 1);
  const mail = mails[0]!;
  assert.deepEqual(mail.envelopeTo, [email], 'exactly one envelope recipient');
  assert.equal(smtp.received.filter((m) => m.envelopeTo.includes('evil@example.com')).length, 0);
  const headerBlock = mail.raw.slice(0, mail.raw.indexOf('\r\n\r\n'));
  assert.doesNotMatch(headerBlock, /^bcc:/im, 'no Bcc header line');
  assert.equal(mail.parsed.bcc, undefined);
  const toLine = /^To: (.*(?:\r\n[ \t].*)*)/m.exec(headerBlock)?.[1] ?? '';
  assert.equal(toLine, email, 'the To header is the address alone (the name is the signup\'s, not the recipient\'s)');
  assert.ok(!headerBlock.includes('Eve'), 'the name is in no header');
  const to = Array.isArray(mail.parsed.to) ? mail.parsed.to[0] : mail.parsed.to;
  assert.deepEqual(to?.value.map((a) => a.address), [email]);
  assert.equal(mail.parsed.messageId, `<welcome-${outboxId}@mailoffload.test>`);
  await waitUntil(async () => (await outboxRow(outboxId)).status === 'sent');
});

test('a 421 then success is delivered once with attempts = 2; a 550 is dead after one attempt and never retried', async (t) => {
  const attemptsAt = new Map<string, number>();
  const tempFail = uniqueEmail('greylisted');
  const permFail = uniqueEmail('rejected');
  const smtp = await startSmtpSink(t, {
    reply: (_session, rcpt) => {
      const address = rcpt[0]!;
      const attempt = (attemptsAt.get(address) ?? 0) + 1;
      attemptsAt.set(address, attempt);
      if (address === tempFail && attempt === 1) return 421;
      if (address === permFail) return 550;
      return undefined;
    },
  });
  const { app } = await withApp(t, {}, smtp);

  await signup(app, tempFail);
  await signup(app, permFail);
  const tempId = await outboxRowFor(tempFail);
  const permId = await outboxRowFor(permFail);

  await waitUntil(async () => (await outboxRow(tempId)).status === 'sent', 15_000, () => `${tempFail} sent after its retry`);
  assert.equal(smtp.to(tempFail).length, 1, 'delivered exactly once');
  assert.equal(attemptsAt.get(tempFail), 2);
  const temp = await outboxRow(tempId);
  assert.equal(temp.attempts, 2);
  assert.equal(temp.message_id, `<welcome-${tempId}@mailoffload.test>`);

  await waitUntil(async () => (await outboxRow(permId)).status === 'dead', 10_000, () => `${permFail} marked dead`);
  const dead = await outboxRow(permId);
  assert.equal(dead.attempts, 1);
  assert.match(dead.last_error ?? '', /550/);

  // Proof that the sweeper ran again since: two later rows, left for it, get delivered. The
  // dead row was due for nothing and no second attempt reached the server.
  for (let round = 0; round < 2; round++) {
    const probe = uniqueEmail('probe');
    await insertPendingEmail(db.pool, 'Probe', probe);
    await waitUntil(() => smtp.to(probe).length === 1, 10_000, () => `the sweeper's email to ${probe}`);
  }
  assert.equal(attemptsAt.get(permFail), 1, 'the 550 was not retried');
  assert.equal(smtp.to(permFail).length, 0);
  assert.equal((await outboxRow(permId)).status, 'dead');
});

test('an SMTP server that is down for the first seconds gets the email once it is up', async (t) => {
  // Reserve a port, then free it: the service starts with nothing listening there.
  const port = await new Promise<number>((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as { port: number };
      probe.close(() => resolve(free));
    });
  });
  const { app } = await buildTestApp(t, { DATABASE_URL: db.url, SMTP_URL: `smtp://127.0.0.1:${port}` });

  const email = uniqueEmail('patient');
  await signup(app, email);
  const outboxId = await outboxRowFor(email);
  // The first attempt fails with a refused connection and is scheduled for a retry.
  await waitUntil(async () => {
    const row = await outboxRow(outboxId);
    return row.status === 'pending' && row.attempts >= 1;
  }, 10_000, () => 'a failed first attempt');
  assert.match((await outboxRow(outboxId)).last_error ?? '', /ECONNECTION|ECONNREFUSED/);

  const smtp = await startSmtpSink(t, { port });
  await waitUntil(() => smtp!.to(email).length === 1, 20_000, () => `${email} delivered once the server is up`);
  await waitUntil(async () => (await outboxRow(outboxId)).status === 'sent');
  const row = await outboxRow(outboxId);
  assert.ok(row.attempts >= 2, `attempts = ${row.attempts}`);
  assert.equal(smtp.to(email).length, 1);
});

test('2,000 signups with a small in-flight bound: each delivered exactly once, memory bounds never exceeded', async (t) => {
  const MAX_IN_FLIGHT = 50;
  const { app, smtp } = await withApp(t, {
    MAIL_MAX_IN_FLIGHT: String(MAX_IN_FLIGHT),
    MAIL_BATCH_SIZE: '8',
    SWEEP_INTERVAL_MS: '100',
    // 2,000 signups from one address in a few seconds: the signup rate limits are not under test.
    RATE_LIMIT_PER_MINUTE: '0',
    RATE_LIMIT_GLOBAL_PER_MINUTE: '0',
  });
  const { dispatcher, pool } = app.mailer.internals;
  const maxQueue = pool.options.maxQueue;
  assert.equal(typeof maxQueue, 'number');

  let maxInFlight = 0;
  let maxQueueSize = 0;
  let samples = 0;
  const sampler = setInterval(() => {
    samples++;
    maxInFlight = Math.max(maxInFlight, dispatcher.inFlight);
    maxQueueSize = Math.max(maxQueueSize, pool.queueSize);
  }, 2);
  t.after(() => clearInterval(sampler));

  const prefix = unique('burst');
  const { url } = await listen(app);
  const load = startSignupLoad(t, { targets: [url], concurrency: 32, count: 2000, prefix });
  await load.done;
  assert.equal(load.accepted().length, 2000, `every signup accepted (${describeOutcomes(load.outcomes)})`);
  const emails = load.outcomes.map((outcome) => outcome.email);

  await waitUntil(() => smtp.received.length >= emails.length, 60_000, () => `2000 emails, got ${smtp.received.length}`);
  await waitUntil(async () => {
    const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 AND o.status = 'sent'", [`${prefix}-%`]);
    return rows[0]!.n === emails.length;
  }, 20_000, () => 'every outbox row marked sent');
  clearInterval(sampler);

  const perAddress = new Map<string, number>();
  for (const mail of smtp.received) for (const rcpt of mail.envelopeTo) perAddress.set(rcpt, (perAddress.get(rcpt) ?? 0) + 1);
  const notOnce = emails.filter((email) => perAddress.get(email) !== 1);
  assert.deepEqual(notOnce, [], 'every address received exactly one email');
  const messageIds = new Set(smtp.received.map((mail) => mail.parsed.messageId));
  assert.equal(messageIds.size, emails.length, 'Message-IDs are unique');

  assert.ok(samples > 100, `sampled the bounds ${samples} times`);
  assert.ok(maxInFlight <= MAX_IN_FLIGHT, `dispatcher held ${maxInFlight} jobs, bound ${MAX_IN_FLIGHT}`);
  assert.ok(maxInFlight > 0, 'the sampler saw work in flight');
  assert.ok(maxQueueSize <= maxQueue!, `pool queue reached ${maxQueueSize}, bound ${maxQueue}`);
  const deferred = await app.metrics.signupsDeferred.get();
  t.diagnostic(`max in flight ${maxInFlight}/${MAX_IN_FLIGHT}, max pool queue ${maxQueueSize}/${maxQueue}, deferred to the sweeper ${deferred.values[0]?.value ?? 0}`);
});

/** Records each task handed to the (real) worker pool: how many emails, and when (Date.now()). */
function recordBatches(app: TestApp): { size: number; at: number }[] {
  const { pool } = app.mailer.internals;
  const tasks: { size: number; at: number }[] = [];
  const run = pool.run.bind(pool);
  pool.run = (task, options) => {
    tasks.push({ size: task.length, at: Date.now() });
    return run(task, options);
  };
  return tasks;
}

test('emails that arrive close together share a pool task, up to MAIL_BATCH_WAIT_MS; a lone one, a full batch and one the pool has no room to batch go at once', async (t) => {
  // A batch of 4, a pool window of 4 (one worker, two connections, two messages each), and a
  // wait long enough to tell apart from the rest of the path.
  const { app, smtp } = await withApp(t, { MAIL_BATCH_SIZE: '4', MAIL_WORKERS: '1', MAIL_SMTP_CONNECTIONS: '2', MAIL_BATCH_WAIT_MS: '1000', RATE_LIMIT_PER_MINUTE: '0' });
  const tasks = recordBatches(app);
  const prefix = unique('batched');
  const address = (i: number) => `${prefix}-${i}@example.com`;
  const answeredAt = new Map<number, number>();
  const send = async (i: number) => {
    await signup(app, address(i));
    answeredAt.set(i, Date.now());
  };
  const delivered = (i: number) => waitUntil(() => smtp.received.some((mail) => mail.envelopeTo[0] === address(i)), 10_000, () => `email ${i}`);
  const sentAfter202 = (i: number) => smtp.received.find((mail) => mail.envelopeTo[0] === address(i))!.receivedAt - answeredAt.get(i)!;
  const settled = () => waitUntil(() => app.mailer.inFlight === 0, 10_000, () => `${app.mailer.inFlight} emails still held`);

  // The first follows no other: it goes at once.
  await send(0);
  await delivered(0);
  await settled();
  assert.ok(sentAfter202(0) < 500, `the first email was sent ${sentAfter202(0)} ms after its 202, without waiting`);
  // Four close together, to an idle pool, fill a batch: one task, without waiting.
  await Promise.all([1, 2, 3, 4].map(send));
  await delivered(4);
  await settled();
  const fullBatchAfter202 = tasks[1]!.at - Math.max(...[1, 2, 3, 4].map((i) => answeredAt.get(i)!));
  // Two close together, to an idle pool: one task, which waits its full second for a third
  // and a fourth that never come, then goes.
  await send(5);
  await send(6);
  await delivered(6);
  await settled();
  // A pool without room for a full batch is not made to wait for one: the SMTP server holds
  // its answer to one email (3 places left of 4), and the next one, close behind, is handed
  // to the pool at once.
  smtp.stall();
  await send(7);
  await waitUntil(() => smtp.held > 0, 10_000, () => 'the server holding an answer');
  await send(8);
  await waitUntil(() => tasks.length === 5, 10_000, () => `${tasks.length} tasks`);
  const busyAfter202 = tasks[4]!.at - answeredAt.get(8)!;
  smtp.resume();
  await delivered(8);

  assert.deepEqual(tasks.map((task) => task.size), [1, 4, 2, 1, 1]);
  assert.ok(fullBatchAfter202 < 500, `the full batch was handed over ${fullBatchAfter202} ms after its last 202`);
  assert.ok(sentAfter202(5) >= 900 && sentAfter202(5) < 5000, `the partial batch was sent ${sentAfter202(5)} ms after its first 202: after the wait, not never`);
  assert.ok(busyAfter202 < 500, `with no room for a full batch the email was handed over ${busyAfter202} ms after its 202`);
  assert.equal(smtp.received.filter((mail) => mail.envelopeTo[0]!.startsWith(prefix)).length, 9, 'each email once');
});

/**
 * `count` signups at `ratePerSecond`, one at a time, with batches of 4 and a wait of a second;
 * returns the size of each pool task once every email has been received.
 */
async function taskSizesAtRate(t: TestContext, label: string, count: number, ratePerSecond: number): Promise<number[]> {
  const { app, smtp } = await withApp(t, { MAIL_BATCH_SIZE: '4', MAIL_BATCH_WAIT_MS: '1000', RATE_LIMIT_PER_MINUTE: '0' });
  const tasks = recordBatches(app);
  const prefix = unique(label);
  const { url } = await listen(app);
  const load = startSignupLoad(t, { targets: [url], concurrency: 1, count, ratePerSecond, prefix });
  await load.done;
  assert.equal(load.accepted().length, count, describeOutcomes(load.outcomes));
  await waitUntil(() => smtp.received.filter((mail) => mail.envelopeTo[0]!.startsWith(prefix)).length === count, 10_000, () => `${count} emails`);
  return tasks.map((task) => task.size);
}

test('emails that come fast enough to fill a batch within half of MAIL_BATCH_WAIT_MS do not wait for one', async (t) => {
  // Fifty signups a second: four of them (a batch) come well within half the second of waiting.
  // Once the smoothed gap between emails says so, each email is handed to the pool in the turn
  // it was queued, alone, instead of being held for the next three.
  const sizes = await taskSizesAtRate(t, 'dense', 30, 50);
  assert.deepEqual(sizes.slice(-10), Array(10).fill(1), `tasks: ${sizes.join(' ')}`);
});

test('emails that fill a batch within MAIL_BATCH_WAIT_MS but not within half of it wait for companions', async (t) => {
  // Six signups a second with a batch of 4: a batch takes about 670 ms to gather, inside the
  // second of waiting but not inside half of it, so each email waits for the next ones and
  // they go to the pool together, as at the real password cost's hundred-odd a second with
  // the default 40 ms.
  const sizes = await taskSizesAtRate(t, 'sparse', 24, 6);
  assert.equal(sizes.reduce((sum, size) => sum + size, 0), 24, `tasks: ${sizes.join(' ')}`);
  assert.ok(sizes.length <= 9, `24 emails in ${sizes.length} tasks (${sizes.join(' ')}): they waited for each other`);
});

test('MAIL_BATCH_WAIT_MS=0: every email goes to the pool in the turn it was queued', async (t) => {
  const { app, smtp } = await withApp(t, { MAIL_BATCH_SIZE: '4', MAIL_BATCH_WAIT_MS: '0', RATE_LIMIT_PER_MINUTE: '0' });
  const tasks = recordBatches(app);
  const prefix = unique('unbatched');
  for (let i = 0; i < 5; i++) await signup(app, `${prefix}-${i}@example.com`);
  await waitUntil(() => smtp.received.filter((mail) => mail.envelopeTo[0]!.startsWith(prefix)).length === 5, 10_000, () => 'five emails');
  assert.deepEqual(tasks.map((task) => task.size), [1, 1, 1, 1, 1]);
});

test('a backlog larger than the in-flight bound drains without waiting for sweep ticks', async (t) => {
  // 300 due rows, room for 20 at a time, and a sweep interval of a minute: only a sweeper that
  // claims again as soon as the dispatcher has room can deliver them all within the deadline.
  const prefix = unique('backlog');
  await insertPendingEmails(db.pool, numberedUsers(prefix, 300, 'Backlog'));
  const { smtp, app } = await withApp(t, { MAIL_MAX_IN_FLIGHT: '20', MAIL_BATCH_SIZE: '4', SWEEP_INTERVAL_MS: '60000' });
  let maxInFlight = 0;
  const sampler = setInterval(() => (maxInFlight = Math.max(maxInFlight, app.mailer.inFlight)), 2);
  t.after(() => clearInterval(sampler));
  await waitUntil(() => smtp.received.filter((mail) => mail.envelopeTo[0]!.startsWith(prefix)).length === 300, 20_000, () => `300 backlog emails, got ${smtp.received.length}`);
  await waitUntil(async () => {
    const { rows } = await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM email_outbox o JOIN users u ON u.id = o.user_id WHERE u.email LIKE $1 AND o.status = 'sent'", [`${prefix}-%`]);
    return rows[0]!.n === 300;
  });
  assert.ok(maxInFlight <= 20, `held ${maxInFlight} jobs, bound 20`);
});

test('a worker thread that dies mid-task is replaced and its email is retried and delivered', async (t) => {
  const smtp = await startSmtpSink(t, { latencyMs: 1000 });
  const { app } = await withApp(t, { MAIL_WORKERS: '1' }, smtp);
  const { pool } = app.mailer.internals;
  const [original] = pool.threads;
  assert.ok(original);

  const email = uniqueEmail('orphan');
  await signup(app, email);
  const outboxId = await outboxRowFor(email);
  // The message is on the wire and the server is sitting on it: the task is running.
  await waitUntil(() => smtp.dataStarted >= 1, 10_000, () => 'the first send to reach the server');
  for (const thread of pool.threads) await thread.terminate();

  await waitUntil(async () => (await outboxRow(outboxId)).status === 'sent', 20_000, () => `${email} sent after the retry`);
  const row = await outboxRow(outboxId);
  assert.equal(row.attempts, 2, 'the dead thread\'s attempt failed and a second one succeeded');
  assert.equal(row.last_error, null);
  assert.equal(pool.threads.length, 1, 'the pool replaced the thread');
  assert.notEqual(pool.threads[0], original);
  // At-least-once: the server may have kept the first copy too; any copy is the same message.
  const copies = smtp.to(email);
  assert.ok(copies.length >= 1);
  for (const copy of copies) assert.equal(copy.parsed.messageId, `<welcome-${outboxId}@mailoffload.test>`);
});

test('with DKIM configured every message carries a DKIM-Signature for the domain and selector that verifies', async (t) => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  const { app, smtp } = await withApp(t, { DKIM_DOMAIN: 'mailoffload.test', DKIM_SELECTOR: 'mail2026', DKIM_PRIVATE_KEY: privateKey });
  const email = uniqueEmail('signed');
  await signup(app, email);
  await waitUntil(() => smtp.to(email).length === 1, 10_000, () => `signed email to ${email}`);
  const raw = smtp.to(email)[0]!.raw;

  const split = raw.indexOf('\r\n\r\n');
  const headers = raw.slice(0, split).split(/\r\n(?![ \t])/).map((field) => {
    const colon = field.indexOf(':');
    return { name: field.slice(0, colon), value: field.slice(colon + 1) };
  });
  const signatures = headers.filter((h) => h.name.toLowerCase() === 'dkim-signature');
  assert.equal(signatures.length, 1, 'one DKIM-Signature header');
  const signature = signatures[0]!;
  const tags = new Map(
    signature.value.split(';').map((tag) => {
      const eq = tag.indexOf('=');
      return [tag.slice(0, eq).trim(), tag.slice(eq + 1).replace(/\s+/g, '')] as [string, string];
    }),
  );
  assert.equal(tags.get('d'), 'mailoffload.test');
  assert.equal(tags.get('s'), 'mail2026');
  assert.equal(tags.get('a'), 'rsa-sha256');
  assert.equal(tags.get('c'), 'relaxed/relaxed');

  // RFC 6376 relaxed canonicalization, then the body hash and the RSA signature themselves.
  const relaxedBody = raw.slice(split + 4).split('\r\n').map((line) => line.replace(/[ \t]+/g, ' ').replace(/ $/, ''));
  while (relaxedBody.length > 0 && relaxedBody.at(-1) === '') relaxedBody.pop();
  const bodyHash = createHash('sha256').update(relaxedBody.map((line) => `${line}\r\n`).join('')).digest('base64');
  assert.equal(tags.get('bh'), bodyHash, 'the body hash matches the body');
  const relaxedHeader = (h: { name: string; value: string }) => `${h.name.toLowerCase().trim()}:${h.value.replace(/\r\n/g, '').replace(/[ \t]+/g, ' ').trim()}`;
  const signed = tags.get('h')!.split(':').map((name) => {
    const field = headers.filter((h) => h.name.toLowerCase() === name).at(-1);
    assert.ok(field, `signed header ${name} is present`);
    return `${relaxedHeader(field)}\r\n`;
  });
  const unsignedSignature = relaxedHeader({ name: signature.name, value: signature.value.replace(/(\bb=)[^;]*/, '$1') });
  const verifier = createVerify('RSA-SHA256');
  verifier.update(signed.join('') + unsignedSignature);
  assert.ok(verifier.verify(publicKey, tags.get('b')!, 'base64'), 'the signature verifies with the public key');
});
