// The production install: build once, ship the build with the package files, install without
// dev dependencies, start node directly. Nothing at start may need TypeScript or any other dev
// dependency, and `npm start` must work there too (it builds only where TypeScript is).
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import {
  FAST_ARGON2,
  NO_RATE_LIMITS,
  createTestDatabase,
  followService,
  postJson,
  projectRoot,
  startSmtpSink,
  uniqueEmail,
  waitUntil,
  type ServiceProcess,
  type SmtpSink,
  type TestDatabase,
} from './helpers.js';

/** What the README's production install ships: the build and what `npm ci` needs. */
const SHIPPED = ['dist/src', 'dist/workers', 'migrations', 'package.json', 'package-lock.json'];

const target = mkdtempSync(path.join(tmpdir(), 'mailoffload-production-'));
const services: ServiceProcess[] = [];
let db: TestDatabase;
let sink: SmtpSink;

before(async () => {
  for (const entry of SHIPPED) cpSync(path.join(projectRoot, entry), path.join(target, entry), { recursive: true });
  // Offline first: the packages are in npm's cache since the project's own `npm ci`.
  await promisify(execFile)('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund'], { cwd: target, timeout: 120_000 });
  db = await createTestDatabase();
  sink = await startSmtpSink();
});

after(async () => {
  for (const service of services) {
    if (service.child.exitCode === null && service.child.signalCode === null) {
      service.kill('SIGKILL');
      await service.exited;
    }
  }
  await sink?.stop();
  await db?.drop();
  rmSync(target, { recursive: true, force: true });
});

async function start(command: string, args: string[]): Promise<ServiceProcess> {
  const child = spawn(command, args, {
    cwd: target,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', LOG_LEVEL: 'info', MAIL_WORKERS: '2', DATABASE_URL: db.url, SMTP_URL: sink.url, ...FAST_ARGON2, ...NO_RATE_LIMITS },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const service = await followService(child);
  services.push(service);
  return service;
}

async function signupDeliveredAndStop(service: ServiceProcess): Promise<void> {
  const health = await fetch(`${service.url}/v1/healthcheck`);
  assert.equal(health.status, 200);
  const email = uniqueEmail('production');
  assert.equal((await postJson(service.url, '/v1/users', { name: 'Production', email, password: 'pa55word1234' })).status, 202);
  await waitUntil(() => sink.to(email).length === 1, 15_000, () => `the welcome email to ${email}`);
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

test('node dist/src/server.js: healthcheck, a signup delivered, SIGTERM, exit 0', async () => {
  await signupDeliveredAndStop(await start(process.execPath, ['dist/src/server.js']));
});

test('npm start without TypeScript starts the shipped build: a signup delivered, SIGTERM to npm, exit 0', async () => {
  const service = await start('npm', ['start']);
  assert.ok(!existsSync(path.join(target, 'src')), 'there was nothing to build from');
  await signupDeliveredAndStop(service);
});
