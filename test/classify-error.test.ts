// The failure classifier, fed by real nodemailer errors: a real smtp-server refuses at each
// SMTP step, and the worker's own batch sender (the production send path) reports what it
// got. A few cases that no server can provoke (nodemailer refusing before it speaks SMTP)
// are checked with nodemailer itself or, last, with hand-built errors.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { test } from 'node:test';
import nodemailer from 'nodemailer';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import type { FailedResult, MailResult, WorkerSettings } from '../src/mail/contract.js';
import { classifySendError } from '../workers/classify-error.js';
import { loadWelcomeTemplates } from '../src/mail/templates.js';
import { createBatchSender } from '../workers/send-batch.js';
import { closeAtEnd, closedPort, file } from './support/index.js';


/** An error for an smtp-server callback: its responseCode is the reply code on the wire. */
function reply(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

/**
 * A real SMTP server on loopback, closed when the file ends. Not the kit's sink: each case
 * refuses at its own step (greeting, EHLO, AUTH, MAIL FROM…) through smtp-server's own hooks.
 * Enhanced status codes are written into the reply texts ourselves (hideENHANCEDSTATUSCODES),
 * so the wire carries exactly what a provider would send, such as "535 5.7.8 Authentication
 * credentials invalid".
 */
async function smtpServer(options: SMTPServerOptions): Promise<number> {
  const server = new SMTPServer({
    disableReverseLookup: true,
    logger: false,
    hideENHANCEDSTATUSCODES: true,
    disabledCommands: ['STARTTLS'],
    authOptional: true,
    // AUTH without TLS: the loopback test server has no certificate.
    allowInsecureAuth: true,
    ...options,
  });
  server.on('error', () => undefined);
  closeAtEnd(file, () => new Promise<void>((resolve) => server.close(() => resolve())));
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  return (server.server.address() as { port: number }).port;
}


const refuseData = (code: number, text: string): SMTPServerOptions => ({
  onData(stream, _session, callback) {
    stream.resume();
    stream.on('end', () => callback(reply(code, text)));
  },
});

let nextId = 1;

/** One welcome email through the worker's batch sender (pooled nodemailer transport). */
async function sendThroughWorker(port: number, settings: Partial<WorkerSettings> & { credentials?: string } = {}): Promise<MailResult> {
  const { credentials, ...rest } = settings;
  const sender = createBatchSender({
    smtpUrl: `smtp://${credentials ? `${credentials}@` : ''}127.0.0.1:${port}`,
    from: 'Mailoffload <no-reply@localhost>',
    messageIdDomain: 'localhost',
    smtpConnections: 1,
    sendTimeoutMs: 5_000,
    tlsRejectUnauthorized: false,
    handBack: new SharedArrayBuffer(4),
    welcomeTemplates: loadWelcomeTemplates(),
    ...rest,
  });
  try {
    const [result] = await sender.send([{ outboxId: nextId++, userId: 1, name: 'Ada', email: 'ada@example.com', token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' }]);
    assert.ok(result);
    return result;
  } finally {
    sender.close();
  }
}

function assertFailed(result: MailResult): FailedResult {
  assert.equal(result.status, 'failed', `expected a failure, got ${JSON.stringify(result)}`);
  return result as FailedResult;
}

interface Case {
  readonly name: string;
  readonly server?: SMTPServerOptions;
  readonly port?: () => Promise<number>;
  readonly settings?: Partial<WorkerSettings> & { credentials?: string };
  readonly expect: Pick<FailedResult, 'code' | 'responseCode' | 'command' | 'phase' | 'kind'>;
}

const cases: Case[] = [
  {
    name: 'greeting 554',
    server: { onConnect: (_session, callback) => callback(reply(554, '5.7.1 Service unavailable')) },
    expect: { code: 'EPROTOCOL', responseCode: 554, command: 'CONN', phase: 'greeting', kind: 'provider' },
  },
  {
    name: 'greeting 421',
    server: { onConnect: (_session, callback) => callback(reply(421, 'Service not available, closing transmission channel')) },
    expect: { code: 'EPROTOCOL', responseCode: 421, command: 'CONN', phase: 'greeting', kind: 'provider' },
  },
  {
    name: 'greeting 421 4.7.0 too many connections (throttling)',
    server: { onConnect: (_session, callback) => callback(reply(421, '4.7.0 Too many connections, try again later')) },
    expect: { code: 'EPROTOCOL', responseCode: 421, command: 'CONN', phase: 'greeting', kind: 'throttled' },
  },
  {
    name: 'connection refused (a closed port)',
    port: closedPort,
    expect: { code: 'ESOCKET', responseCode: null, command: 'CONN', phase: 'connection', kind: 'provider' },
  },
  {
    name: 'no greeting within the timeout',
    // onConnect that never answers: the server accepts the socket and stays silent.
    server: { onConnect: () => undefined },
    settings: { sendTimeoutMs: 300 },
    expect: { code: 'ETIMEDOUT', responseCode: null, command: 'CONN', phase: 'connection', kind: 'provider' },
  },
  {
    name: 'STARTTLS required by us, not offered by the server',
    server: {},
    settings: { requireTls: true },
    expect: { code: 'ETLS', responseCode: 500, command: 'STARTTLS', phase: 'starttls', kind: 'provider' },
  },
  {
    name: 'AUTH 535 5.7.8 (a rotated password)',
    server: { onAuth: (_auth, _session, callback) => callback(reply(535, '5.7.8 Authentication credentials invalid')) },
    settings: { credentials: 'user:old-password' },
    expect: { code: 'EAUTH', responseCode: 535, command: 'AUTH PLAIN', phase: 'auth', kind: 'provider' },
  },
  {
    name: 'AUTH 454 4.7.0',
    server: { onAuth: (_auth, _session, callback) => callback(reply(454, '4.7.0 Temporary authentication failure')) },
    settings: { credentials: 'user:password' },
    expect: { code: 'EAUTH', responseCode: 454, command: 'AUTH PLAIN', phase: 'auth', kind: 'provider' },
  },
  {
    name: 'MAIL FROM 554 5.7.1 (sending paused)',
    server: { onMailFrom: (_address, _session, callback) => callback(reply(554, '5.7.1 Sending paused for this account')) },
    expect: { code: 'EENVELOPE', responseCode: 554, command: 'MAIL FROM', phase: 'mail-from', kind: 'provider' },
  },
  {
    name: 'MAIL FROM 451',
    server: { onMailFrom: (_address, _session, callback) => callback(reply(451, '4.3.0 Temporary local problem')) },
    expect: { code: 'EENVELOPE', responseCode: 451, command: 'MAIL FROM', phase: 'mail-from', kind: 'provider' },
  },
  {
    name: 'MAIL FROM 421 4.7.0 (throttling)',
    server: { onMailFrom: (_address, _session, callback) => callback(reply(421, '4.7.0 Try again later, closing connection')) },
    expect: { code: 'EENVELOPE', responseCode: 421, command: 'MAIL FROM', phase: 'mail-from', kind: 'throttled' },
  },
  {
    name: 'RCPT TO 550 5.1.1 (unknown recipient)',
    server: { onRcptTo: (_address, _session, callback) => callback(reply(550, '5.1.1 No such user')) },
    expect: { code: 'EENVELOPE', responseCode: 550, command: 'RCPT TO', phase: 'rcpt-to', kind: 'permanent' },
  },
  {
    name: 'RCPT TO 450',
    server: { onRcptTo: (_address, _session, callback) => callback(reply(450, '4.2.1 Mailbox busy')) },
    expect: { code: 'EENVELOPE', responseCode: 450, command: 'RCPT TO', phase: 'rcpt-to', kind: 'provider' },
  },
  {
    name: 'RCPT TO 451 4.7.1 (throttling)',
    server: { onRcptTo: (_address, _session, callback) => callback(reply(451, '4.7.1 Please try again later')) },
    expect: { code: 'EENVELOPE', responseCode: 451, command: 'RCPT TO', phase: 'rcpt-to', kind: 'throttled' },
  },
  {
    name: 'DATA 554 (content refused)',
    server: refuseData(554, '5.6.0 Message content rejected'),
    expect: { code: 'EMESSAGE', responseCode: 554, command: 'DATA', phase: 'data', kind: 'permanent' },
  },
  {
    name: 'DATA 454',
    server: refuseData(454, '4.3.0 Temporary failure'),
    expect: { code: 'EMESSAGE', responseCode: 454, command: 'DATA', phase: 'data', kind: 'provider' },
  },
  {
    name: 'DATA 454 "Throttling failure: Maximum sending rate exceeded." (Amazon SES)',
    server: refuseData(454, 'Throttling failure: Maximum sending rate exceeded.'),
    expect: { code: 'EMESSAGE', responseCode: 454, command: 'DATA', phase: 'data', kind: 'throttled' },
  },
  {
    name: 'DATA 421 4.7.0 (Gmail rate limiting)',
    server: refuseData(421, '4.7.0 Try again later, closing connection'),
    expect: { code: 'EMESSAGE', responseCode: 421, command: 'DATA', phase: 'data', kind: 'throttled' },
  },
  {
    name: 'DATA 451 "rate limit exceeded"',
    server: refuseData(451, '4.4.2 Rate limit exceeded'),
    expect: { code: 'EMESSAGE', responseCode: 451, command: 'DATA', phase: 'data', kind: 'throttled' },
  },
];

for (const c of cases) {
  test(`${c.name}: ${c.expect.kind}, phase ${c.expect.phase}`, async () => {
    const port = c.port ? await c.port() : await smtpServer(c.server ?? {});
    const result = assertFailed(await sendThroughWorker(port, c.settings));
    const { code, responseCode, command, phase, kind } = result;
    assert.deepEqual({ code, responseCode, command, phase, kind }, c.expect);
    // The result crosses from the worker thread to the API thread by structured clone.
    assert.deepEqual(structuredClone(result), result);
    if (responseCode !== null) assert.match(result.message, new RegExp(`${responseCode}`), 'the reply is in the message');
  });
}

test('the same server accepting: sent (the cases above fail because of the refusal, not the setup)', async () => {
  const port = await smtpServer({ onAuth: (_auth, _session, callback) => callback(null, { user: 'user' }) });
  assert.equal((await sendThroughWorker(port)).status, 'sent');
  assert.equal((await sendThroughWorker(port, { credentials: 'user:password' })).status, 'sent');
});

test('EHLO and HELO refused: provider fault in the ehlo phase (plain nodemailer, a client name the server rejects)', async () => {
  const port = await smtpServer({});
  // smtp-server answers 501 to "EHLO bad name" and to "HELO bad name" (two words).
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, name: 'bad name', connectionTimeout: 5_000, greetingTimeout: 5_000, socketTimeout: 5_000 });
  const error = await transport.sendMail({ from: 'a@example.com', to: 'b@example.com', text: 'x' }).then(
    () => assert.fail('the send should fail'),
    (err: unknown) => err,
  );
  transport.close();
  const classified = classifySendError(error);
  assert.deepEqual(
    { code: classified.code, responseCode: classified.responseCode, command: classified.command, phase: classified.phase, kind: classified.kind },
    { code: 'EPROTOCOL', responseCode: 501, command: 'HELO', phase: 'ehlo', kind: 'provider' },
  );
});

test('credentials missing a password: provider fault in the auth phase, before any SMTP reply', async () => {
  const port = await smtpServer({});
  const result = assertFailed(await sendThroughWorker(port, { credentials: 'user' }));
  assert.deepEqual([result.code, result.command, result.phase, result.kind], ['EAUTH', 'API', 'auth', 'provider']);
});

test('an address nodemailer cannot parse, and the worker\'s own address check: permanent', async () => {
  const port = await smtpServer({});
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port });
  const error = await transport.sendMail({ from: 'a@example.com', envelope: { from: 'a@example.com', to: 'not an address' }, text: 'x' }).then(
    () => assert.fail('the send should fail'),
    (err: unknown) => err,
  );
  transport.close();
  const classified = classifySendError(error);
  assert.deepEqual([classified.code, classified.command, classified.kind], ['EENVELOPE', 'API', 'permanent']);

  const sender = createBatchSender({ smtpUrl: `smtp://127.0.0.1:${port}`, from: 'Mailoffload <no-reply@localhost>', messageIdDomain: 'localhost', smtpConnections: 1, sendTimeoutMs: 5_000, tlsRejectUnauthorized: false, handBack: new SharedArrayBuffer(4), welcomeTemplates: loadWelcomeTemplates() });
  const [result] = await sender.send([{ outboxId: nextId++, userId: 1, name: 'Eve', email: 'eve@example.com, mallory@example.com', token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' }]);
  sender.close();
  const failed = assertFailed(result!);
  assert.deepEqual([failed.code, failed.kind], ['EINVALIDRECIPIENT', 'permanent']);
});

// What no server here provokes: kept to the rules that the cases above do not already cover.
test('hand-built edge cases: 503 at DATA, 454 4.7.0 without throttling text, non-errors', () => {
  const data503 = classifySendError(Object.assign(new Error('Message failed: 503 5.5.1 Error: no valid recipients'), { code: 'EMESSAGE', responseCode: 503, command: 'DATA', response: '503 5.5.1 Error: no valid recipients' }));
  assert.equal(data503.kind, 'provider', '503 is a session-state reply, not a refusal of the message');
  const tls454 = classifySendError(Object.assign(new Error('Error upgrading connection with STARTTLS: 454 4.7.0 TLS not available'), { code: 'ETLS', responseCode: 454, command: 'STARTTLS', response: '454 4.7.0 TLS not available due to temporary reason' }));
  assert.deepEqual([tls454.phase, tls454.kind], ['starttls', 'provider']);
  const reset = classifySendError(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' }));
  assert.deepEqual([reset.phase, reset.kind], ['connection', 'provider']);
  const unknown = classifySendError('something odd');
  assert.deepEqual([unknown.code, unknown.phase, unknown.kind, unknown.message], ['EUNKNOWN', 'unknown', 'provider', 'something odd']);
  const undef = classifySendError(undefined);
  assert.deepEqual([undef.kind, undef.command, undef.responseCode], ['provider', null, null]);
});
