// The production install: build once, ship the build and the templates with the package
// files, install without dev dependencies, migrate and start node directly. Nothing at start may need TypeScript or any other dev
// dependency, and `npm start` must work there too (it builds only where TypeScript is).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { promisify } from 'node:util';
import { SERVICE_NODE_FLAGS } from '../src/node-flags.js';
import {
  createTestDatabase,
  file,
  followService,
  postJson,
  projectRoot,
  startSmtpSink,
  tempDir,
  TEST_ENV,
  uniqueEmail,
  waitUntil,
  type Database,
  type Scope,
  type ServiceProcess,
  type SmtpSink,
} from './support/index.js';

/** What the README's production install ships: the build, the templates and what `npm ci` needs. */
const SHIPPED = ['dist/src', 'dist/workers', 'dist/scripts', 'migrations', 'templates', 'package.json', 'package-lock.json'];

const run = promisify(execFile);
const target = tempDir(file, 'production');
let db: Database;
let sink: SmtpSink;

before(async () => {
  for (const entry of SHIPPED) cpSync(path.join(projectRoot, entry), path.join(target, entry), { recursive: true });
  // Offline first: the packages are in npm's cache since the project's own `npm ci`.
  await run('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: target, timeout: 120_000 });
  db = await createTestDatabase(file);
  sink = await startSmtpSink(file);
});

/** The environment of a production start: only PATH, HOME and the settings, nothing of ours. */
const productionEnv = () => ({
  PATH: process.env.PATH,
  HOME: process.env.HOME,
  NODE_ENV: 'production',
  PORT: '0',
  LOG_LEVEL: 'info',
  ...TEST_ENV,
  DATABASE_URL: db.url,
  SMTP_URL: sink.url,
});

/** `command` in the installed folder, followed as the service; stopped at the end of the test. */
function start(t: Scope, command: string, args: string[]): Promise<ServiceProcess> {
  const child = spawn(command, args, { cwd: target, env: productionEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  return followService(t, child, { name: `${command} ${args.join(' ')}` });
}

async function signupDeliveredAndStop(service: ServiceProcess): Promise<void> {
  const health = await fetch(`${service.url}/v1/healthcheck`);
  assert.equal(health.status, 200);
  const email = uniqueEmail('production');
  assert.equal((await postJson(service.url, '/v1/users', { name: 'Production', email, password: 'pa55word1234' })).status, 202);
  await waitUntil(() => sink.to(email).length === 1, 15_000, () => `the welcome email to ${email}`);
  // Rendered from the shipped templates (the boot stops without them).
  assert.equal(sink.to(email)[0]!.parsed.subject, 'Welcome to Mailoffload!');
  service.kill('SIGTERM');
  assert.deepEqual(await service.exited, { code: 0, signal: null });
  assert.ok(service.logs.some((line) => line.msg === 'stopped server'));
}

test('npm ci --omit=dev installs no dev dependency', () => {
  for (const dev of ['typescript', 'mailparser', 'autocannon']) {
    assert.ok(!existsSync(path.join(target, 'node_modules', dev)), `${dev} is not installed`);
  }
  assert.ok(existsSync(path.join(target, 'node_modules', 'fastify')), 'the runtime dependencies are');
});

test('the operator tools run there: node dist/scripts/migrate.js migrates, node dist/scripts/outbox.js reads the outbox', async () => {
  const tool = (script: string, ...args: string[]) => run(process.execPath, [script, ...args], { cwd: target, env: productionEnv(), timeout: 60_000 });
  assert.match((await tool('dist/scripts/migrate.js')).stdout, /"msg":"migrations applied"/);
  const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM pg_tables WHERE schemaname = 'public' AND tablename = 'email_outbox'");
  assert.equal(rows[0].n, 1, 'the tables exist');
  assert.match((await tool('dist/scripts/migrate.js')).stdout, /"msg":"database is up to date"/);
  // A rejection (exit code not 0) fails the test.
  await tool('dist/scripts/outbox.js', 'stats');
});

/** The command line of the node process that wrote the service's first log line (pino logs its pid). */
function nodeCommandLine(service: ServiceProcess): string[] {
  const pid = service.logs.find((line) => typeof line.pid === 'number')?.pid as number;
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
}

test('node --single-threaded-gc dist/src/server.js: healthcheck, a signup delivered, SIGTERM, exit 0', async (t) => {
  await signupDeliveredAndStop(await start(t, process.execPath, [...SERVICE_NODE_FLAGS, 'dist/src/server.js']));
});

test('npm start without TypeScript starts the shipped build with the service\'s node flags: a signup delivered, SIGTERM to npm, exit 0', async (t) => {
  const service = await start(t, 'npm', ['start']);
  assert.ok(!existsSync(path.join(target, 'src')), 'there was nothing to build from');
  const commandLine = nodeCommandLine(service);
  assert.deepEqual(commandLine.slice(1), [...SERVICE_NODE_FLAGS, 'dist/src/server.js'], `npm start runs ${commandLine.join(' ')}`);
  await signupDeliveredAndStop(service);
});
