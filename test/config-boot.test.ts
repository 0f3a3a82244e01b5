// Configuration and boot: every invalid environment value stops the boot with exit code 1 and
// one line naming the variable (and never a credential); the embedded PostgreSQL starts under
// DATA_DIR, keeps its data across restarts, refuses a second instance on the same DATA_DIR and
// leaves no postgres process behind; `npm run migrate` applies the migrations once, safely
// when two run together; DATABASE_POOL_MAX bounds the connections an instance opens.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { simpleParser } from 'mailparser';
import pg from 'pg';
import { ConfigError, loadConfig } from '../src/config.js';
import { isAlive, startEmbeddedPostgres } from '../src/db/embedded-postgres.js';
import { createLogger } from '../src/logger.js';
import {
  closeAtEnd,
  createTestDatabase,
  file,
  postJson,
  processesMentioning,
  projectRoot,
  startSmtpSink,
  startTestService,
  stopProcessesMentioning,
  tempDir,
  uniqueEmail,
  waitUntil,
  type Scope,
  type ServiceProcess,
} from './support/index.js';

// ---------------------------------------------------------------------------------------
// loadConfig, in-process

function assertConfigError(env: Record<string, string>, variable: string, secret?: string): ConfigError {
  let caught: unknown;
  try {
    loadConfig(env);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `${JSON.stringify(env)} throws a ConfigError (got ${String(caught)})`);
  assert.equal(caught.variable, variable);
  assert.ok(caught.message.includes(variable), `the message names ${variable}: ${caught.message}`);
  assert.match(caught.message, /must be|use /, 'the message says what is accepted');
  assert.ok(!caught.message.includes('\n'), 'one line');
  if (secret !== undefined) assert.ok(!caught.message.includes(secret), `the message does not echo the secret: ${caught.message}`);
  return caught;
}

describe('loadConfig', () => {
  const invalid: [variable: string, value: string, secret?: string][] = [
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['PORT', '-1'],
    ['PORT', '80.5'],
    ['SHUTDOWN_TIMEOUT_MS', '-1'],
    ['SHUTDOWN_TIMEOUT_MS', 'soon'],
    ['DATABASE_URL', 'not a url'],
    ['DATABASE_URL', 'nonsense'],
    ['DATABASE_URL', 'mysql://x'],
    ['DATABASE_URL', 'mysql://admin:hunter2@db.example/app', 'hunter2'],
    ['DATABASE_URL', 'postgres://admin:hunter2@', 'hunter2'],
    ['DATABASE_URL', 'http://admin:hunter2@db.example/app', 'hunter2'],
    ['SMTP_URL', 'http://x'],
    ['SMTP_URL', 'smtp//mail.example'],
    ['SMTP_URL', 'https://user:hunter2@mail.example', 'hunter2'],
    ['LOG_LEVEL', 'loud'],
    ['MAIL_WORKERS', '0'],
    ['MAIL_WORKERS', 'many'],
    ['ARGON2_MEMORY_KIB', 'abc'],
    ['ARGON2_MEMORY_KIB', '4'],
    ['ARGON2_ITERATIONS', '0'],
    ['METRICS_ENABLED', 'maybe'],
    ['DATABASE_POOL_MAX', '0'],
    ['DATABASE_POOL_MAX', 'lots'],
    ['MAIL_BATCH_WAIT_MS', '-1'],
    ['MAIL_BATCH_WAIT_MS', '1001'],
    ['MAIL_BATCH_WAIT_MS', 'soon'],
    ['MAIL_FROM', 'nobody'],
  ];
  for (const [variable, value, secret] of invalid) {
    test(`${variable}=${JSON.stringify(value)} is a ConfigError naming ${variable}`, () => {
      assertConfigError({ [variable]: value }, variable, secret);
    });
  }

  test('half a DKIM setup is a ConfigError naming the missing variable', () => {
    assertConfigError({ DKIM_DOMAIN: 'example.com', DKIM_SELECTOR: 'mail' }, 'DKIM_PRIVATE_KEY');
    assertConfigError({ DKIM_PRIVATE_KEY: '-----BEGIN PRIVATE KEY-----\\nx\\n-----END PRIVATE KEY-----' }, 'DKIM_DOMAIN');
  });

  test('an invalid value next to valid ones is still found', () => {
    assertConfigError({ PORT: '4001', HOST: '0.0.0.0', LOG_LEVEL: 'debug', SHUTDOWN_TIMEOUT_MS: '-5' }, 'SHUTDOWN_TIMEOUT_MS');
  });

  test('the defaults are the documented ones', () => {
    const config = loadConfig({});
    assert.equal(config.port, 4000);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.databaseUrl, undefined);
    assert.equal(config.databasePoolMax, 6);
    assert.equal(config.smtpUrl, undefined);
    assert.equal(config.mailFrom, 'Mailoffload <no-reply@localhost>');
    assert.equal(config.dataDir, path.resolve('./.data'));
    assert.equal(config.mail.workers, availableParallelism());
    assert.equal(config.mail.dkim, undefined);
    assert.equal(config.shutdownTimeoutMs, 25_000);
    assert.equal(config.logLevel, 'info');
    assert.deepEqual({ ...config.argon2 }, { memoryKib: 19_456, iterations: 2 });
  });

  test('an empty value means the default; valid values are parsed to their types', () => {
    assert.equal(loadConfig({ PORT: '' }).port, 4000);
    const config = loadConfig({
      PORT: '8080',
      HOST: '0.0.0.0',
      DATABASE_URL: 'postgresql://app:secret@db.internal:5433/mail',
      SMTP_URL: 'smtps://user:pass@smtp.example.com:465',
      MAIL_WORKERS: '3',
      SHUTDOWN_TIMEOUT_MS: '0',
      LOG_LEVEL: 'warn',
      ARGON2_MEMORY_KIB: '65536',
      ARGON2_ITERATIONS: '3',
      DATA_DIR: 'var/data',
    });
    assert.equal(config.port, 8080);
    assert.equal(config.host, '0.0.0.0');
    assert.equal(config.databaseUrl, 'postgresql://app:secret@db.internal:5433/mail');
    assert.equal(config.smtpUrl, 'smtps://user:pass@smtp.example.com:465');
    assert.equal(config.mail.workers, 3);
    assert.equal(config.shutdownTimeoutMs, 0);
    assert.equal(config.logLevel, 'warn');
    assert.deepEqual({ ...config.argon2 }, { memoryKib: 65_536, iterations: 3 });
    assert.equal(config.dataDir, path.resolve('var/data'), 'DATA_DIR is made absolute');
  });

  test('the config is frozen, nested objects too', () => {
    const config = loadConfig({});
    assert.ok(Object.isFrozen(config));
    assert.ok(Object.isFrozen(config.mail));
    assert.ok(Object.isFrozen(config.argon2));
    assert.throws(() => {
      (config as { port: number }).port = 1;
    }, TypeError);
    assert.throws(() => {
      (config.mail as { workers: number }).workers = 99;
    }, TypeError);
    assert.equal(config.port, 4000);
  });

  test('loadConfig reads only the object it is given, not process.env', () => {
    const saved = process.env.PORT;
    process.env.PORT = 'abc';
    try {
      assert.equal(loadConfig({}).port, 4000);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });
});

// ---------------------------------------------------------------------------------------
// The compiled service as a child process

/**
 * A service stopped at the end of `scope` if still running: by default the file's, or a test's
 * `t` when it runs in that test's temporary folders (removed when the test ends).
 */
const launch = (env: Record<string, string | undefined>, waitReady: boolean, scope: Scope = file) => startTestService(scope, env, { waitReady });

/** Runs the service until it exits by itself (a boot that must fail) and returns its output. */
async function bootFailure(env: Record<string, string | undefined>, scope: Scope = file) {
  const service = await launch(env, false, scope);
  // startService sorts stdout into JSON logs and other lines; keep the raw stdout as well.
  let stdout = '';
  service.child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  const exit = await Promise.race([
    service.exited,
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('the service did not exit within 30 s')), 30_000).unref()),
  ]);
  const stderr = service.stderr.join('');
  return { exit, stdout, stderr, logs: service.logs, all: `${stdout}\n${stderr}\n${JSON.stringify(service.logs)}` };
}

describe('boot with an invalid environment', () => {
  for (const [variable, value] of [
    ['PORT', 'abc'],
    ['DATABASE_URL', 'nonsense'],
    ['SHUTDOWN_TIMEOUT_MS', '-1'],
  ] as const) {
    test(`${variable}=${value}: exit code 1, one stderr line naming ${variable}, nothing on stdout`, async () => {
      const { exit, stdout, stderr } = await bootFailure({ [variable]: value });
      assert.deepEqual(exit, { code: 1, signal: null });
      const lines = stderr.split('\n').filter((line) => line.trim() !== '');
      assert.equal(lines.length, 1, `exactly one line: ${JSON.stringify(lines)}`);
      assert.ok(lines[0]!.includes(variable), lines[0]);
      assert.equal(stdout, '', 'nothing on stdout, in particular no "starting server"');
    });
  }

  test('a malformed DATABASE_URL with credentials is reported without them', async () => {
    const { exit, all, stderr } = await bootFailure({ DATABASE_URL: 'mysql://admin:hunter2@db.example/app' });
    assert.equal(exit.code, 1);
    assert.match(stderr, /DATABASE_URL/);
    assert.ok(!all.includes('hunter2'), all);
  });

  test('an unreachable DATABASE_URL fails the boot (exit 1) without echoing its password', async () => {
    const { exit, all, logs } = await bootFailure({ DATABASE_URL: 'postgres://admin:hunter2@127.0.0.1:1/app' });
    assert.equal(exit.code, 1);
    assert.ok(!all.includes('hunter2'), all);
    assert.ok(!logs.some((line) => line.msg === 'starting server'));
    const fatal = logs.find((line) => line.level === 60);
    assert.ok(fatal, `a fatal log line says why: ${all.slice(0, 500)}`);
    assert.match(JSON.stringify(fatal), /ECONNREFUSED/);
  });
});

describe('embedded PostgreSQL under DATA_DIR', () => {
  // Open to the `postgres` user, who runs PostgreSQL when we are root.
  const root = tempDir(file, 'boot');
  const dataDir = path.join(root, 'data');
  const mailbox = path.join(dataDir, 'mailbox');
  const email = uniqueEmail('embedded');
  const password = 'embedded-pa55word';

  const postmasterPid = () => Number.parseInt(readFileSync(path.join(dataDir, 'pg', 'postmaster.pid'), 'utf8').split('\n')[0]!, 10);

  async function stopAndCheckClean(service: ServiceProcess, pgPid: number): Promise<void> {
    service.kill('SIGINT');
    const exit = await service.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(service.logs.some((line) => line.msg === 'stopped server'));
    assert.ok(!isAlive(pgPid), `postgres (pid ${pgPid}) is gone`);
    assert.deepEqual(processesMentioning(path.join(dataDir, 'pg')), [], 'no process runs on this DATA_DIR any more');
    assert.ok(!existsSync(path.join(dataDir, 'pg', 'postmaster.pid')), 'PostgreSQL shut down cleanly (postmaster.pid removed)');
    assert.ok(!existsSync(path.join(dataDir, 'instance.pid')), 'the DATA_DIR lock is released');
  }

  test('first start: initialises PostgreSQL, answers, mails to DATA_DIR/mailbox, refuses a second instance, stops clean on SIGINT', async () => {
    const t0 = Date.now();
    const service = await launch({ DATA_DIR: dataDir }, true);
    const bootMs = Date.now() - t0;
    // A fresh clone answers within 20 s (initdb included).
    assert.ok(bootMs < 20_000, `booted in ${bootMs} ms`);

    const health = await fetch(`${service.url}/v1/healthcheck`);
    assert.equal(health.status, 200);
    assert.equal(((await health.json()) as { status: string }).status, 'available');

    const signup = await postJson(service.url, '/v1/users', { name: 'Embedded Ada', email, password });
    assert.equal(signup.status, 202);
    assert.equal(signup.body.user.email, email);

    // The built-in catcher saves the welcome email as an .eml file.
    let raw = '';
    await waitUntil(
      () => {
        if (!existsSync(mailbox)) return false;
        for (const file of readdirSync(mailbox).filter((name) => name.endsWith('.eml'))) {
          const text = readFileSync(path.join(mailbox, file), 'utf8');
          if (text.includes(email)) raw = text;
        }
        return raw !== '';
      },
      15_000,
      () => `an .eml for ${email} in ${mailbox}`,
    );
    const mail = await simpleParser(raw);
    assert.equal(mail.subject, 'Welcome to Mailoffload!');
    const token = /"token":\s*"([A-Z2-7]{26})"/.exec(mail.text ?? '')?.[1];
    assert.ok(token, 'the email carries an activation token');
    // Neither the password nor the token is in any log line.
    const logText = JSON.stringify(service.logs);
    assert.ok(!logText.includes(password) && !logText.includes(token));

    const pgPid = postmasterPid();
    assert.ok(isAlive(pgPid));
    assert.ok(processesMentioning(path.join(dataDir, 'pg')).includes(pgPid), 'the /proc scan sees the running postgres');

    // A second instance on the same DATA_DIR fails with a clear message and harms nothing.
    const second = await bootFailure({ DATA_DIR: dataDir });
    assert.equal(second.exit.code, 1);
    assert.match(second.all, /DATA_DIR/);
    assert.ok(second.all.includes(dataDir), `the message names ${dataDir}: ${second.all.slice(0, 500)}`);
    assert.ok(!second.logs.some((line) => line.msg === 'starting server'));
    assert.equal(readFileSync(path.join(dataDir, 'instance.pid'), 'utf8').trim(), String(service.child.pid), 'the lock still belongs to the first');
    assert.equal(postmasterPid(), pgPid, 'the running PostgreSQL was not touched');
    assert.equal((await fetch(`${service.url}/v1/healthcheck`)).status, 200);

    await stopAndCheckClean(service, pgPid);
  });

  test('second start on the same DATA_DIR reuses the data: the same email is now a duplicate', async () => {
    const service = await launch({ DATA_DIR: dataDir }, true);
    assert.ok(!service.logs.some((line) => line.msg === 'initialising embedded PostgreSQL'), 'initdb is not run again');
    const duplicate = await postJson(service.url, '/v1/users', { name: 'Embedded Ada again', email, password });
    assert.equal(duplicate.status, 422);
    assert.deepEqual(duplicate.body, { error: { email: 'a user with this email address already exists' } });
    const fresh = await postJson(service.url, '/v1/users', { name: 'Second run', email: uniqueEmail('embedded2'), password });
    assert.equal(fresh.status, 202);
    // Ids continue from the first run's sequence.
    assert.ok(fresh.body.user.id > 1);
    await stopAndCheckClean(service, postmasterPid());
  });

});

// Only as root (as CI runs) does PostgreSQL run as another user, who can be shut out of a
// folder; as a normal user the folders are the user's own, so there is nothing to place.
if (process.getuid?.() === 0) describe('as root, a DATA_DIR the postgres user cannot reach', () => {
  const placedMsg = 'embedded PostgreSQL cluster placed outside DATA_DIR, where the postgres user can enter';

  /**
   * A cluster placed outside DATA_DIR is in no temporary folder of ours: at the end of the
   * test, stop whatever PostgreSQL a failed assertion left on it, and remove it.
   */
  function removeAtEnd(t: Scope, cluster: string): void {
    closeAtEnd(t, async () => {
      await stopProcessesMentioning(cluster);
      rmSync(cluster, { recursive: true, force: true });
    });
  }

  test('the cluster lives outside, linked from DATA_DIR/pg; a restart finds it; a deleted DATA_DIR gets a new one', async (t) => {
    // 0700, as mkdtemp makes it: the `postgres` user cannot enter.
    const closed = tempDir(t, 'closed', 0o700);
    assert.equal(statSync(closed).mode & 0o777, 0o700);
    const dataDir = path.join(closed, 'data');
    const email = uniqueEmail('closed');
    const password = 'closed-pa55word';

    const first = await launch({ DATA_DIR: dataDir }, true, t);
    const placed = first.logs.find((line) => line.msg === placedMsg);
    assert.ok(placed, 'where the cluster went is logged');
    assert.equal(placed.closedFolder, closed);
    const cluster = String(placed.cluster);
    removeAtEnd(t, cluster);
    assert.ok(!cluster.startsWith(`${closed}/`), `${cluster} is outside the closed folder`);
    assert.ok(lstatSync(path.join(dataDir, 'pg')).isSymbolicLink());
    assert.equal(realpathSync(path.join(dataDir, 'pg')), cluster);
    const owner = statSync(cluster);
    assert.equal(owner.mode & 0o777, 0o700, 'the cluster is private to the postgres user');
    assert.notEqual(owner.uid, 0);
    assert.equal((await postJson(first.url, '/v1/users', { name: 'Closed', email, password })).status, 202);
    first.kill('SIGINT');
    assert.deepEqual(await first.exited, { code: 0, signal: null });
    assert.deepEqual(processesMentioning(cluster), [], 'PostgreSQL stopped with the service');

    const second = await launch({ DATA_DIR: dataDir }, true, t);
    assert.ok(!second.logs.some((line) => line.msg === 'initialising embedded PostgreSQL'), 'the cluster is found again');
    assert.equal((await postJson(second.url, '/v1/users', { name: 'Closed again', email, password })).status, 422, 'with its data');
    // SIGKILL leaves PostgreSQL running on the cluster; then DATA_DIR (link, password) is deleted.
    const orphan = Number.parseInt(readFileSync(path.join(cluster, 'postmaster.pid'), 'utf8'), 10);
    second.kill('SIGKILL');
    await second.exited;
    assert.ok(isAlive(orphan), 'PostgreSQL outlived the killed service');
    rmSync(dataDir, { recursive: true });

    const third = await launch({ DATA_DIR: dataDir }, true, t);
    assert.ok(third.logs.some((line) => line.msg === 'removing an embedded PostgreSQL cluster whose DATA_DIR was deleted'));
    assert.ok(third.logs.some((line) => line.msg === 'initialising embedded PostgreSQL'));
    assert.ok(!isAlive(orphan), 'the PostgreSQL left on the old cluster was stopped');
    assert.equal(realpathSync(path.join(dataDir, 'pg')), cluster, 'the same place, made anew');
    assert.equal((await postJson(third.url, '/v1/users', { name: 'Closed anew', email, password })).status, 202, 'an empty database');
    third.kill('SIGINT');
    assert.deepEqual(await third.exited, { code: 0, signal: null });
    assert.deepEqual(processesMentioning(cluster), []);
  });

  test('a cluster made in DATA_DIR, then shut in by a closed folder: exit 1 naming that folder', async (t) => {
    const root = tempDir(t, 'shut');
    const dataDir = path.join(root, 'data');
    const service = await launch({ DATA_DIR: dataDir }, true, t);
    assert.ok(!service.logs.some((line) => line.msg === placedMsg), 'reachable: the cluster stays in DATA_DIR');
    assert.ok(lstatSync(path.join(dataDir, 'pg')).isDirectory());
    service.kill('SIGINT');
    assert.equal((await service.exited).code, 0);

    chmodSync(root, 0o700);
    const { exit, all } = await bootFailure({ DATA_DIR: dataDir }, t);
    assert.equal(exit.code, 1);
    assert.ok(all.includes(`cannot enter ${root},`), `the message names ${root}: ${all.slice(0, 600)}`);
    assert.match(all, /DATABASE_URL/);
    assert.ok(existsSync(path.join(dataDir, 'pg', 'PG_VERSION')), 'the cluster is left where it is');
  });
});

// ---------------------------------------------------------------------------------------
// npm run migrate (node dist/scripts/migrate.js)

function runMigrate(databaseUrl: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [path.join(projectRoot, 'dist/scripts/migrate.js')],
      { cwd: projectRoot, env: { PATH: process.env.PATH, DATABASE_URL: databaseUrl, LOG_LEVEL: 'info' }, timeout: 30_000 },
      (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('a boot that fails after the embedded PostgreSQL started', () => {
  test('exits 1 with a plain stderr line and stops the PostgreSQL it started', async (t) => {
    const root = tempDir(t, 'bootfail');
    const dataDir = path.join(root, 'data');
    // A `users` table the migrations did not create makes 001_users fail after PostgreSQL is up.
    const embedded = await startEmbeddedPostgres(dataDir, createLogger('silent'));
    // Stopped below; and whatever fails before that, at the end of the test (stop() is idempotent).
    closeAtEnd(t, () => embedded.stop());
    const client = new pg.Client({ connectionString: embedded.url });
    await client.connect();
    await client.query('CREATE TABLE users (id int)');
    await client.end();
    await embedded.stop();

    const service = await launch({ DATA_DIR: dataDir }, false);
    const exit = await service.exited;
    assert.equal(exit.code, 1);
    const stderr = service.stderr.join('');
    assert.match(stderr, /^mailoffload: failed to start: .*users/m);
    assert.ok(service.logs.some((line) => line.msg === 'embedded PostgreSQL stopped'), 'the embedded PostgreSQL was stopped');
    assert.deepEqual(processesMentioning(path.join(dataDir, 'pg')), [], 'no postgres left running on this DATA_DIR');
    assert.ok(!existsSync(path.join(dataDir, 'instance.pid')), 'the DATA_DIR lock is released');
  });
});

describe('DATABASE_POOL_MAX', () => {
  test('the service opens at most DATABASE_POOL_MAX connections, however many signups arrive at once; every one is answered and mailed', async (t) => {
    const db = await createTestDatabase(t);
    const smtp = await startSmtpSink(t);
    const service = await startTestService(t, { DATABASE_URL: db.url, SMTP_URL: smtp.url, DATABASE_POOL_MAX: '2' });
    const countConnections = async () =>
      (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mailoffload'")).rows[0]!.n;
    let most = 0;
    let loading = true;
    // Sampled back to back while the signups are under way (each sample is one query).
    const sampling = (async () => {
      while (loading) most = Math.max(most, await countConnections());
    })();
    const emails = Array.from({ length: 40 }, () => uniqueEmail('pool'));
    const statuses = await Promise.all(emails.map(async (email) => (await postJson(service.url, '/v1/users', { name: 'Pool', email, password: 'pa55word1234' })).status));
    loading = false;
    await sampling;
    assert.deepEqual(new Set(statuses), new Set([202]), 'every signup accepted');
    assert.ok(most >= 1 && most <= 2, `at most 2 connections, saw ${most}`);
    await waitUntil(() => emails.every((email) => smtp.to(email).length === 1), 15_000, () => 'the 40 welcome emails');
  });
});

describe('npm run migrate', () => {
  test('two runs together on a fresh database apply each migration once; a third finds it up to date', async (t) => {
    const db = await createTestDatabase(t);
    const files = readdirSync(path.join(projectRoot, 'migrations')).filter((name) => name.endsWith('.sql'));
    assert.ok(files.length >= 3);
    const [a, b] = await Promise.all([runMigrate(db.url), runMigrate(db.url)]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const { rows } = await db.pool.query('SELECT name FROM pgmigrations ORDER BY run_on, id');
    assert.deepEqual(rows.map((row) => `${row.name}.sql`).sort(), [...files].sort(), 'each file recorded exactly once');
    const tables = await db.pool.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
    for (const table of ['email_outbox', 'pgmigrations', 'tokens', 'users']) {
      assert.ok(tables.rows.some((row) => row.tablename === table), `table ${table} exists`);
    }
    const third = await runMigrate(db.url);
    assert.equal(third.code, 0, third.stderr);
    assert.match(third.stdout, /database is up to date/);
    assert.equal((await db.pool.query('SELECT count(*)::int AS n FROM pgmigrations')).rows[0].n, files.length);
    assert.ok(!`${a.stdout}${b.stdout}${third.stdout}`.includes(new URL(db.url).password || '\u0000'), 'no password in its output');
  });

  test('an invalid DATABASE_URL: exit code 1 and a message naming the variable', async () => {
    const result = await runMigrate('mysql://admin:hunter2@db.example/app');
    assert.equal(result.code, 1);
    assert.match(result.stderr, /DATABASE_URL/);
    assert.ok(!`${result.stdout}${result.stderr}`.includes('hunter2'));
  });
});
