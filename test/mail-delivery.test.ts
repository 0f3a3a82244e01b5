import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { buildTestApp, createTestDatabase, file, startSmtpSink, tokenFrom, uniqueEmail, waitUntil, type Database, type SmtpSink, type TestApp } from './support/index.js';

let db: Database;
let smtp: SmtpSink;
let app: TestApp;

before(async () => {
  db = await createTestDatabase(file);
  smtp = await startSmtpSink(file);
  ({ app } = await buildTestApp(file, { DATABASE_URL: db.url, SMTP_URL: smtp.url }));
});

test('a signup gets a welcome email whose token activates the account', async () => {
  const email = uniqueEmail('welcome');
  const signup = await app.inject({ method: 'POST', url: '/v1/users', payload: { name: 'Ada <script>alert(1)</script>', email, password: 'pa55word1234' } });
  assert.equal(signup.statusCode, 202);
  const { user } = signup.json();
  assert.equal(user.activated, false);

  await waitUntil(() => smtp.to(email).length === 1, 10_000, () => `welcome email to ${email}`);
  const mail = smtp.to(email)[0]!;
  assert.equal(mail.parsed.subject, 'Welcome to Mailoffload!');
  assert.deepEqual(mail.envelopeTo, [email]);
  assert.match(mail.parsed.text ?? '', new RegExp(`user ID number is ${user.id}\\.`));
  // The name is the signup's, not the recipient's: the default templates and the To header
  // leave it out (escaping of a template that does use it: welcome-templates.test.ts).
  for (const part of [mail.parsed.text ?? '', String(mail.parsed.html), mail.raw]) {
    assert.ok(!part.includes('alert(1)'), 'the signup name appears nowhere in the email');
  }
  assert.ok(!String(mail.parsed.html).includes('<script>'), 'no raw script tag in the HTML part');
  assert.match(mail.parsed.text ?? '', /it will expire in 3 days\./);

  const { rows } = await db.pool.query('SELECT id, status, attempts, message_id FROM email_outbox WHERE user_id = $1', [user.id]);
  assert.equal(rows.length, 1);
  await waitUntil(async () => (await db.pool.query('SELECT status FROM email_outbox WHERE id = $1', [rows[0].id])).rows[0].status === 'sent');
  assert.equal(mail.parsed.messageId, `<welcome-${rows[0].id}@mailoffload.test>`);

  const activation = await app.inject({ method: 'PUT', url: '/v1/users/activated', payload: { token: tokenFrom(mail) } });
  assert.equal(activation.statusCode, 200);
  assert.equal(activation.json().user.activated, true);
  const again = await app.inject({ method: 'PUT', url: '/v1/users/activated', payload: { token: tokenFrom(mail) } });
  assert.equal(again.statusCode, 422);
  assert.deepEqual(again.json(), { error: { token: 'invalid or expired activation token' } });
});
