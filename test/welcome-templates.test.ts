// The welcome email comes from the files in MAIL_TEMPLATES_DIR: an edit changes what is
// delivered, every value is escaped for the part it lands in, the expiry wording follows the
// token's lifetime, and a missing or broken template stops the boot with one line naming it.
import assert from 'node:assert/strict';
import { cpSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import { ConfigError, loadConfig } from '../src/config.js';
import { DEFAULT_TEMPLATES_DIR, loadWelcomeTemplates } from '../src/mail/templates.js';
import { ACTIVATION_TTL_MS } from '../src/tokens.js';
import { compileWelcome, describeDuration, TemplateError } from '../workers/render-welcome.js';
import { buildTestApp, createTestDatabase, file as fileScope, projectRoot, startSmtpSink, startTestService, tempDir, tokenFrom, uniqueEmail, waitUntil, type Database, type SmtpSink } from './support/index.js';

let db: Database;
let smtp: SmtpSink;

before(async () => {
  db = await createTestDatabase(fileScope);
  smtp = await startSmtpSink(fileScope);
});

/** A copy of the shipped templates in a temporary folder, to edit. */
function templatesCopy(): string {
  const dir = tempDir(fileScope, 'templates');
  cpSync(DEFAULT_TEMPLATES_DIR, dir, { recursive: true });
  return dir;
}

function edit(dir: string, file: string, change: (text: string) => string): void {
  const target = path.join(dir, file);
  writeFileSync(target, change(readFileSync(target, 'utf8')));
}

/** The 1-based number of the first line of `file` that contains `text`. */
function lineOf(file: string, text: string): number {
  return readFileSync(file, 'utf8').split('\n').findIndex((line) => line.includes(text)) + 1;
}

const job = { outboxId: 7, userId: 42, name: 'Ada', email: 'ada@example.com', token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' };

describe('rendering', () => {
  test('the shipped templates are the checkout\'s templates/ folder, and the default of MAIL_TEMPLATES_DIR', () => {
    assert.equal(DEFAULT_TEMPLATES_DIR, path.join(projectRoot, 'templates'));
    assert.deepEqual(loadConfig({}).mail.welcomeTemplates, loadWelcomeTemplates(path.join(projectRoot, 'templates')));
  });

  test('the default email: subject, user id, token, expiry from ACTIVATION_TTL_MS, and no name', () => {
    const email = compileWelcome(loadWelcomeTemplates())({ ...job, name: 'Visit https://evil.example now' });
    assert.equal(email.subject, 'Welcome to Mailoffload!');
    for (const body of [email.text, email.html]) {
      assert.match(body, /user ID number is 42\./);
      assert.ok(body.includes('{"token": "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}'));
      assert.ok(body.includes(`it will expire in ${describeDuration(ACTIVATION_TTL_MS)}.`));
      assert.ok(!body.includes('evil.example'), 'the signup name is not in the body');
    }
    assert.equal(describeDuration(ACTIVATION_TTL_MS), '3 days');
  });

  test('the shipped email goes out as it is: both parts 7bit, none quoted-printable (no line over 76 characters)', async () => {
    // nodemailer sends an ASCII part with short lines as 7bit; one line over 76 characters makes
    // it encode the whole part as quoted-printable, a stream of its own, for every email.
    const { subject, text, html } = compileWelcome(loadWelcomeTemplates())(job);
    const raw = (await new MailComposer({ from: 'no-reply@example.com', to: job.email, subject, text, html }).compile().build()).toString();
    assert.equal(raw.match(/^Content-Transfer-Encoding: 7bit$/gim)?.length, 2, raw);
    assert.doesNotMatch(raw, /quoted-printable|base64/i);
  });

  test('the expiry wording is the largest whole unit of the lifetime', () => {
    assert.equal(describeDuration(86_400_000), '1 day');
    assert.equal(describeDuration(36 * 3_600_000), '36 hours');
    assert.equal(describeDuration(90 * 60_000), '90 minutes');
    assert.equal(describeDuration(45_000), '45 seconds');
  });

  test('values are HTML-escaped in the HTML part, raw in the text part, on one line in the subject', () => {
    const render = compileWelcome({
      subject: 'Hello {{name}} ({{ email }})\n',
      text: 'Hi {{name}}, {{token}}\n',
      html: '<p>Hi {{name}}</p><a href="https://app.example/activate?t={{token}}&u={{userId}}">go</a>\n',
    });
    const email = render({ ...job, name: 'Ada <script>alert("x")</script> & \'co\'\r\nBcc: eve@example.com' });
    assert.equal(email.html, '<p>Hi Ada &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;co&#39;\r\nBcc: eve@example.com</p><a href="https://app.example/activate?t=ABCDEFGHIJKLMNOPQRSTUVWXYZ&u=42">go</a>\n');
    assert.equal(email.text, 'Hi Ada <script>alert("x")</script> & \'co\'\r\nBcc: eve@example.com, ABCDEFGHIJKLMNOPQRSTUVWXYZ\n');
    assert.equal(email.subject, 'Hello Ada <script>alert("x")</script> & \'co\' Bcc: eve@example.com (ada@example.com)');
    assert.ok(!/[\r\n]/.test(email.subject), 'no line break can reach the Subject header');
  });

  test('compile errors name the part and the line', () => {
    const valid = loadWelcomeTemplates();
    const fails = (templates: Partial<typeof valid>, part: string, line: number, message: RegExp) => {
      assert.throws(
        () => compileWelcome({ ...valid, ...templates }),
        (error: unknown) => error instanceof TemplateError && error.part === part && error.line === line && message.test(error.message),
        `${JSON.stringify(templates)}: ${part} line ${line}`,
      );
    };
    fails({ html: '<p>\n{{ token }}\n{{nmae}}</p>' }, 'html', 3, /^unknown field \{\{nmae\}\}: use \{\{userId\}\}, \{\{token\}\}, \{\{email\}\}, \{\{name\}\} or \{\{expiresIn\}\}$/);
    fails({ text: '{{token}}\n\n{{userId' }, 'text', 3, /never closed/);
    fails({ text: '{{{token}}}' }, 'text', 1, /unknown field \{\{\{token\}\}/);
    fails({ text: 'no token here\n' }, 'text', 1, /never uses \{\{token\}\}/);
    fails({ subject: '\n' }, 'subject', 1, /empty/);
    fails({ subject: 'Welcome\nBcc: x@example.com\n' }, 'subject', 2, /one line/);
  });
});

describe('MAIL_TEMPLATES_DIR', () => {
  test('an edited copy changes the delivered email; HTML values stay escaped', async (t) => {
    const dir = templatesCopy();
    edit(dir, 'welcome.subject.txt', () => 'Your Mailoffload account {{userId}}\n');
    edit(dir, 'welcome.txt', (text) => text.replace('Hi,', 'Hello {{name}}, welcome aboard.'));
    edit(dir, 'welcome.html', (html) => html.replace('<p>Hi,</p>', '<p>Hello {{name}}, welcome aboard.</p>'));
    const { app } = await buildTestApp(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_FROM: 'Mailoffload <no-reply@mailoffload.test>', MAIL_TEMPLATES_DIR: dir });
    {
      const email = uniqueEmail('edited');
      const signup = await app.inject({ method: 'POST', url: '/v1/users', payload: { name: 'Ada <b>Lovelace</b>', email, password: 'pa55word1234' } });
      assert.equal(signup.statusCode, 202);
      const { user } = signup.json();
      await waitUntil(() => smtp.to(email).length === 1, 10_000, () => `the edited welcome email to ${email}`);
      const mail = smtp.to(email)[0]!;
      assert.equal(mail.parsed.subject, `Your Mailoffload account ${user.id}`);
      assert.match(mail.parsed.text ?? '', /^Hello Ada <b>Lovelace<\/b>, welcome aboard\.\n/);
      assert.ok(String(mail.parsed.html).includes('<p>Hello Ada &lt;b&gt;Lovelace&lt;/b&gt;, welcome aboard.</p>'));
      assert.ok(!String(mail.parsed.html).includes('<b>'));
      assert.match(mail.parsed.text ?? '', new RegExp(`user ID number is ${user.id}\\.`));
      // The rest of the email is still there, and its token still activates the account.
      const activation = await app.inject({ method: 'PUT', url: '/v1/users/activated', payload: { token: tokenFrom(mail) } });
      assert.equal(activation.statusCode, 200);
    }
  });

  test('a relative value is resolved from the working directory', () => {
    const dir = templatesCopy();
    edit(dir, 'welcome.subject.txt', () => 'Relative\n');
    const relative = path.relative(process.cwd(), dir);
    assert.ok(!path.isAbsolute(relative));
    assert.equal(loadConfig({ MAIL_TEMPLATES_DIR: relative }).mail.welcomeTemplates.subject, 'Relative\n');
  });

  test('loadConfig: a missing or broken template is a ConfigError naming the file', () => {
    const missing = templatesCopy();
    unlinkSync(path.join(missing, 'welcome.txt'));
    const broken = templatesCopy();
    edit(broken, 'welcome.html', (html) => html.replace('{{userId}}', '{{user_id}}'));
    const cases: [dir: string, file: string, detail: RegExp][] = [
      [missing, 'welcome.txt', /cannot read .* \(ENOENT\)$/],
      [broken, 'welcome.html', new RegExp(`line ${lineOf(path.join(broken, 'welcome.html'), '{{user_id}}')}: unknown field \\{\\{user_id\\}\\}`)],
      [path.join(tmpdir(), 'mailoffload-no-such-folder'), 'welcome.subject.txt', /ENOENT/],
    ];
    for (const [dir, file, detail] of cases) {
      assert.throws(
        () => loadConfig({ MAIL_TEMPLATES_DIR: dir }),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.variable === 'MAIL_TEMPLATES_DIR' &&
          error.message.includes(path.join(dir, file)) &&
          detail.test(error.message) &&
          !error.message.includes('\n'),
        `${dir}: names ${file}`,
      );
    }
  });

  test('the service does not start with a broken or missing template: exit 1, one line naming the file', async () => {
    const broken = templatesCopy();
    edit(broken, 'welcome.txt', (text) => text.replace('{{token}}', '{{token}'));
    const missing = templatesCopy();
    unlinkSync(path.join(missing, 'welcome.html'));
    for (const [dir, file, detail] of [[broken, 'welcome.txt', 'line 11: "{{" is never closed by "}}"'], [missing, 'welcome.html', '(ENOENT)']] as const) {
      const service = await startTestService(fileScope, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_TEMPLATES_DIR: dir }, { waitReady: false });
      const exit = await service.exited;
      const stderr = service.stderr.join('');
      assert.deepEqual(exit, { code: 1, signal: null });
      assert.equal(stderr.split('\n').length, 2, `one line: ${stderr}`);
      assert.ok(stderr.startsWith('mailoffload: invalid environment: MAIL_TEMPLATES_DIR must hold usable welcome email templates: '), stderr);
      assert.ok(stderr.includes(path.join(dir, file)) && stderr.includes(detail), `names ${file}: ${stderr}`);
      assert.deepEqual(service.logs, [], 'nothing started');
    }
  });
});
