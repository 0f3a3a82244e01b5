// `npm ci && npm start` in a private folder, as a newcomer runs it: a copy of the project in
// a 0700 folder (as `mktemp -d` makes, and as root's home is). As root, PostgreSQL runs as the
// `postgres` user, which cannot enter that folder: the service must start anyway, answer a
// signup and save the welcome email. The signals come as they do in real life: a SIGTERM to
// npm's pid only (docker stop, systemd or Kubernetes with `npm start` as the command) and a
// SIGINT to the whole process group (Ctrl-C in a terminal). Both must run the full graceful
// shutdown, exit 0 and leave no process behind, PostgreSQL included.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, lstatSync, readFileSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  closeAtEnd,
  file,
  followService,
  groupIsEmpty,
  postJson,
  processesMentioning,
  projectRoot,
  signalGroup,
  stopProcessesMentioning,
  tempDir,
  TEST_ENV,
  uniqueEmail,
  waitUntil,
  type Scope,
  type ServiceProcess,
} from './support/index.js';

const asRoot = process.getuid?.() === 0;
// 0700, as mkdtemp makes it and as root's home is.
const privateFolder = tempDir(file, 'private', 0o700);
const checkout = path.join(privateFolder, 'mailoffload');
const dataDir = path.join(checkout, '.data');

// At the end of the file (before the private folder goes): the cluster, wherever it was
// placed, with any PostgreSQL a failed test left on it.
closeAtEnd(file, async () => {
  if (!existsSync(path.join(dataDir, 'pg'))) return;
  const cluster = clusterDir();
  await stopProcessesMentioning(cluster);
  rmSync(cluster, { recursive: true, force: true });
});

/** The project as a fresh clone has it after `npm ci`: sources and node_modules, no build. */
function copyProject(): void {
  for (const name of readdirSync(projectRoot)) {
    if (['.git', 'dist', '.data'].includes(name)) continue;
    cpSync(path.join(projectRoot, name), path.join(checkout, name), { recursive: true, verbatimSymlinks: true });
  }
}

/**
 * `npm start` in its own process group, as a terminal runs a foreground job. At the end of the
 * test, whatever is left of that group (npm, sh, node) is stopped.
 */
function npmStart(t: Scope): Promise<ServiceProcess> {
  const child = spawn('npm', ['start'], {
    cwd: checkout,
    detached: true,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', LOG_LEVEL: 'info', ...TEST_ENV },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // npm, then the TypeScript build, then initdb: slower than a bare `node`.
  return followService(t, child, { name: 'npm start', readyTimeoutMs: 90_000, graceMs: 20_000, processGroup: true });
}

/** Where PostgreSQL keeps this checkout's cluster: DATA_DIR/pg, or where that link points. */
function clusterDir(): string {
  return realpathSync(path.join(dataDir, 'pg'));
}

async function assertStoppedClean(service: ServiceProcess, signal: NodeJS.Signals): Promise<void> {
  const exit = await service.exited;
  assert.deepEqual(exit, { code: 0, signal: null }, `npm exits 0 (output: ${service.stderr.join('').slice(-800)})`);
  const stopped = service.logs.find((line) => line.msg === 'stopped server');
  assert.ok(stopped, 'the service ran its graceful shutdown to the end');
  assert.equal(stopped.signal, signal);
  assert.ok(service.logs.some((line) => line.msg === 'completing background tasks'));
  assert.ok(!service.logs.some((line) => String(line.msg).startsWith('second signal')), 'one request to stop, not two');
  // Nothing left in npm's process group (npm, sh, node) nor on the cluster (PostgreSQL runs
  // in a group of its own).
  await waitUntil(() => groupIsEmpty(service.pid), 5000, () => 'the process group to be empty');
  assert.deepEqual(processesMentioning(clusterDir()), [], 'no PostgreSQL process left on the cluster');
  assert.ok(!existsSync(path.join(clusterDir(), 'postmaster.pid')), 'PostgreSQL shut down cleanly');
}

test('a copy in a 0700 folder: npm start answers a signup, saves the .eml; a SIGTERM to npm alone stops it all, exit 0', async (t) => {
  assert.equal(statSync(privateFolder).mode & 0o777, 0o700);
  copyProject();
  assert.ok(!existsSync(path.join(checkout, 'dist')), 'no build yet: npm start builds');

  const service = await npmStart(t);
  if (asRoot) {
    // The postgres user cannot enter the private folder: the cluster lives outside it, linked.
    const placed = service.logs.find((line) => line.msg === 'embedded PostgreSQL cluster placed outside DATA_DIR, where the postgres user can enter');
    assert.ok(placed, 'the new location is logged');
    assert.equal(placed.closedFolder, privateFolder);
    assert.ok(lstatSync(path.join(dataDir, 'pg')).isSymbolicLink());
    assert.equal(placed.cluster, clusterDir());
    assert.ok(!clusterDir().startsWith(`${privateFolder}/`));
  } else {
    assert.ok(lstatSync(path.join(dataDir, 'pg')).isDirectory(), 'as the owner of the folder, the cluster is in DATA_DIR');
  }

  const email = uniqueEmail('anywhere');
  const signup = await postJson(service.url, '/v1/users', { name: 'Newcomer', email, password: 'pa55word1234' });
  assert.equal(signup.status, 202);
  const mailbox = path.join(dataDir, 'mailbox');
  await waitUntil(
    () => existsSync(mailbox) && readdirSync(mailbox).some((name) => name.endsWith('.eml') && readFileSync(path.join(mailbox, name), 'utf8').includes(email)),
    15_000,
    () => `an .eml for ${email} in ${mailbox}`,
  );

  const nodePid = Number(service.logs.find((line) => line.msg === 'starting server')!.pid);
  assert.notEqual(nodePid, service.pid, 'the service is a child of npm, not npm itself');
  // npm's pid alone (service.kill signals the child it follows: npm).
  service.kill('SIGTERM');
  await assertStoppedClean(service, 'SIGTERM');
});

test('the same copy again: Ctrl-C (SIGINT to the process group) is one graceful shutdown, exit 0', async (t) => {
  assert.ok(existsSync(path.join(checkout, 'package.json')), 'the first test made the copy');
  const service = await npmStart(t);
  assert.ok(!service.logs.some((line) => line.msg === 'initialising embedded PostgreSQL'), 'the cluster of the first start is reused');
  const email = uniqueEmail('ctrl-c');
  assert.equal((await postJson(service.url, '/v1/users', { name: 'Ctrl C', email, password: 'pa55word1234' })).status, 202);
  // The terminal signals every process of the foreground group, and npm forwards its copy.
  signalGroup(service.pid, 'SIGINT');
  await assertStoppedClean(service, 'SIGINT');
});
