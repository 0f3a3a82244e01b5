// NODE_ENV=production: the embedded PostgreSQL and the mail catcher start only when asked for
// by name, and the catcher, when it runs, keeps each saved email (a live activation token)
// readable by its owner only. The guard is checked in loadConfig and on the compiled service.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { createTestDatabase, file, postJson, projectRoot, startTestService, tempDir, uniqueEmail, waitUntil, type Database } from './support/index.js';

let db: Database;

before(async () => {
  db = await createTestDatabase(file);
});

function refusal(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail(`${JSON.stringify(env)} was accepted`);
}

describe('loadConfig under NODE_ENV=production', () => {
  const database = 'postgres://app:secret@db.internal:5432/app';
  const smtp = 'smtps://mailer:secret@smtp.example.com:465';

  test('an unset DATABASE_URL is refused, naming it and ALLOW_EMBEDDED_POSTGRES', () => {
    const error = refusal({ NODE_ENV: 'production', SMTP_URL: smtp });
    assert.equal(error.variable, 'DATABASE_URL');
    assert.match(error.message, /^invalid environment: NODE_ENV=production needs DATABASE_URL .*set ALLOW_EMBEDDED_POSTGRES=true/);
    assert.ok(!error.message.includes('\n'));
  });

  test('an unset SMTP_URL is refused, naming it and ALLOW_MAIL_CATCHER', () => {
    const error = refusal({ NODE_ENV: 'production', DATABASE_URL: database });
    assert.equal(error.variable, 'SMTP_URL');
    assert.match(error.message, /^invalid environment: NODE_ENV=production needs SMTP_URL .*set ALLOW_MAIL_CATCHER=true/);
    assert.ok(!error.message.includes('\n'));
  });

  test('with both URLs, or with the overrides, the config loads; elsewhere NODE_ENV changes nothing', () => {
    assert.equal(loadConfig({ NODE_ENV: 'production', DATABASE_URL: database, SMTP_URL: smtp }).databaseUrl, database);
    const allowed = loadConfig({ NODE_ENV: 'production', ALLOW_EMBEDDED_POSTGRES: 'true', ALLOW_MAIL_CATCHER: 'true' });
    assert.equal(allowed.databaseUrl, undefined);
    assert.equal(allowed.smtpUrl, undefined);
    for (const NODE_ENV of ['development', 'test', 'Production', '']) {
      assert.equal(loadConfig({ NODE_ENV }).smtpUrl, undefined, `NODE_ENV=${JSON.stringify(NODE_ENV)} is not production`);
    }
    // "false" is not a yes.
    assert.equal(refusal({ NODE_ENV: 'production', ALLOW_EMBEDDED_POSTGRES: 'false', SMTP_URL: smtp }).variable, 'DATABASE_URL');
  });

  test('a command that sends no mail needs DATABASE_URL but not SMTP_URL', () => {
    assert.equal(loadConfig({ NODE_ENV: 'production', DATABASE_URL: database }, { sendsMail: false }).smtpUrl, undefined);
    assert.equal(refusal({ NODE_ENV: 'production', DATABASE_URL: database }).variable, 'SMTP_URL', 'the service itself does send mail');
    assert.throws(() => loadConfig({ NODE_ENV: 'production', SMTP_URL: smtp }, { sendsMail: false }), (error: unknown) => error instanceof ConfigError && error.variable === 'DATABASE_URL');
  });

  test('an override that is not a boolean is refused naming it', () => {
    assert.equal(refusal({ ALLOW_EMBEDDED_POSTGRES: 'yes please' }).variable, 'ALLOW_EMBEDDED_POSTGRES');
    assert.equal(refusal({ ALLOW_MAIL_CATCHER: 'maybe' }).variable, 'ALLOW_MAIL_CATCHER');
  });
});

describe('the compiled service under NODE_ENV=production', () => {
  /** Runs a boot that must fail and returns its exit code and output. */
  async function failedBoot(env: Record<string, string>) {
    const service = await startTestService(file, env, { waitReady: false });
    const exit = await service.exited;
    return { exit, stderr: service.stderr.join(''), logs: service.logs };
  }

  test('without DATABASE_URL: exit 1 and one line naming DATABASE_URL and ALLOW_EMBEDDED_POSTGRES', async () => {
    const dataDir = tempDir(file, 'prod', 0o700);
    const { exit, stderr, logs } = await failedBoot({ NODE_ENV: 'production', DATA_DIR: dataDir });
    assert.deepEqual(exit, { code: 1, signal: null });
    assert.match(stderr, /^mailoffload: invalid environment: NODE_ENV=production needs DATABASE_URL [^\n]*ALLOW_EMBEDDED_POSTGRES=true[^\n]*\n$/);
    assert.deepEqual(logs, [], 'nothing started, nothing logged');
    assert.deepEqual(readdirSync(dataDir), [], 'no PostgreSQL was initialised under DATA_DIR');
  });

  test('without SMTP_URL: exit 1 and one line naming SMTP_URL and ALLOW_MAIL_CATCHER', async () => {
    const { exit, stderr, logs } = await failedBoot({ NODE_ENV: 'production', DATABASE_URL: db.url });
    assert.deepEqual(exit, { code: 1, signal: null });
    assert.match(stderr, /^mailoffload: invalid environment: NODE_ENV=production needs SMTP_URL [^\n]*ALLOW_MAIL_CATCHER=true[^\n]*\n$/);
    assert.deepEqual(logs, []);
  });

  test('npm run migrate needs DATABASE_URL, not SMTP_URL', async () => {
    const migrate = (env: Record<string, string>) =>
      new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const child = execFile(process.execPath, [path.join(projectRoot, 'dist/scripts/migrate.js')], { cwd: projectRoot, env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env } }, (_error, _stdout, stderr) =>
          resolve({ code: child.exitCode, stderr }),
        );
      });
    const refused = await migrate({ NODE_ENV: 'production' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /^mailoffload migrate: invalid environment: NODE_ENV=production needs DATABASE_URL [^\n]*ALLOW_EMBEDDED_POSTGRES=true[^\n]*\n$/);
    const migrated = await migrate({ NODE_ENV: 'production', DATABASE_URL: db.url });
    assert.deepEqual(migrated, { code: 0, stderr: '' });
  });

  test('with ALLOW_MAIL_CATCHER=true it runs the catcher, whose mailbox is 0700 and whose .eml files are 0600', async () => {
    const dataDir = tempDir(file, 'prod', 0o700);
    // A mailbox left open by an older version is closed at boot.
    const mailbox = path.join(dataDir, 'mailbox');
    mkdirSync(mailbox, { mode: 0o755 });
    chmodSync(mailbox, 0o755);

    const service = await startTestService(file, { NODE_ENV: 'production', DATABASE_URL: db.url, ALLOW_MAIL_CATCHER: 'true', DATA_DIR: dataDir });
    assert.ok(service.logs.some((line) => line.msg === 'mail catcher listening: welcome emails are saved as .eml files'));
    const email = uniqueEmail('catcher');
    assert.equal((await postJson(service.url, '/v1/users', { name: 'Cat', email, password: 'pa55word1234' })).status, 202);

    let saved = '';
    await waitUntil(
      () => {
        const file = readdirSync(mailbox).find((name) => name.endsWith('.eml') && readFileSync(path.join(mailbox, name), 'utf8').includes(email));
        saved = file === undefined ? '' : path.join(mailbox, file);
        return saved !== '';
      },
      15_000,
      () => `an .eml for ${email}`,
    );
    assert.equal(statSync(saved).mode & 0o777, 0o600, 'the saved email is readable by its owner only');
    assert.equal(statSync(mailbox).mode & 0o777, 0o700, 'the mailbox folder is closed to other users');
    assert.match(readFileSync(saved, 'utf8'), /"token": "[A-Z2-7]{26}"/, 'the file does hold a live token');

    service.kill('SIGTERM');
    assert.deepEqual(await service.exited, { code: 0, signal: null });
  });
});
