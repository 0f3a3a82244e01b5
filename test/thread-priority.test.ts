// Thread priorities on Linux, read from /proc of the running service: the API thread keeps
// the process's nice value, the mail threads run at MAIL_WORKER_NICE, and the password-hashing
// threads (one per core, named argon2) five steps below the API thread. So the event loop
// takes a core back from any of them as soon as it has work. Each hashing thread holds its
// next hash while it computes one, and goes straight on to it.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { before, test } from 'node:test';
import { createLogger } from '../src/logger.js';
import { HASH_THREAD_NAME } from '../src/password-contract.js';
import { PasswordHasher, verifyPassword } from '../src/passwords.js';
import { closeAtEnd, createTestDatabase, file, startSmtpSink, startTestService, uniqueEmail, waitUntil, type Database, type ServiceProcess, type SmtpSink } from './support/index.js';

interface Thread {
  readonly tid: number;
  readonly name: string;
  readonly nice: number;
  /** R (running or waiting for a core), S (sleeping), … */
  readonly state: string;
}

function threadsOf(pid: number): Thread[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    // Fields after the command name's closing parenthesis: the state is the 3rd field of the
    // line, nice the 19th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { tid: Number(tid), name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(), nice: Number(fields[16]), state: fields[0]! };
  });
}

// Node 24 names its worker threads WorkerThread; Node 22 names only libuv's pool threads, and
// Node 20 none.
const NODE_NAMES_WORKER_THREADS = Number(process.versions.node.split('.')[0]) >= 24;
/** The service's default argon2id cost (OWASP's minimum): 19 MiB, several ms of a core per hash. */
const REAL_COST = { memoryKib: 19_456, iterations: 2 };
let db: Database;
let smtp: SmtpSink;
let service: ServiceProcess;
const log = createLogger('silent');
// Hashes in this process, on threads as the service's are (ended with the file).
let hasher: PasswordHasher;

before(async () => {
  hasher = new PasswordHasher(REAL_COST, log);
  closeAtEnd(file, () => hasher.close(Date.now() + 10_000));
  db = await createTestDatabase(file);
  smtp = await startSmtpSink(file);
  service = await startTestService(file, {
    DATABASE_URL: db.url,
    SMTP_URL: smtp.url,
    MAIL_WORKERS: '2',
    MAIL_WORKER_NICE: '12',
    ARGON2_MEMORY_KIB: String(REAL_COST.memoryKib),
    ARGON2_ITERATIONS: String(REAL_COST.iterations),
  });
  // One signup delivered: the mail threads and the hashing threads have loaded their modules
  // (which set their nice values and names) and worked.
  const email = uniqueEmail('priority');
  const response = await fetch(`${service.url}/v1/users`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Priority', email, password: 'pa55word1234' }) });
  assert.equal(response.status, 202);
  await waitUntil(() => smtp.to(email).length === 1, 10_000, () => `the email to ${email}`);
});

test('the API thread keeps the process priority; the mail threads run at MAIL_WORKER_NICE', () => {
  const threads = threadsOf(service.pid);
  const api = threads.find((t) => t.tid === service.pid)!;
  assert.equal(api.nice, 0, 'the service was started at nice 0');
  const mail = threads.filter((t) => t.nice === 12);
  assert.equal(mail.length, 2, `two threads at MAIL_WORKER_NICE=12: ${JSON.stringify(threads)}`);
  if (NODE_NAMES_WORKER_THREADS) assert.ok(mail.every((t) => t.name === 'WorkerThread'), JSON.stringify(mail));
});

test('the hashing threads, one per core and named argon2, run five nice steps below the API thread; nothing else is lowered', () => {
  const threads = threadsOf(service.pid);
  const hashing = threads.filter((t) => t.name === HASH_THREAD_NAME);
  assert.equal(hashing.length, availableParallelism(), JSON.stringify(threads));
  assert.ok(hashing.every((t) => t.nice === 5), JSON.stringify(hashing));
  // libuv's pool (cheap hashes, other work), V8's threads: at the process's priority.
  assert.ok(threads.every((t) => t.nice === 0 || t.nice === 5 || t.nice === 12), JSON.stringify(threads));
  assert.equal(threads.filter((t) => t.nice === 5).length, hashing.length);
});

test('each hashing thread holds its next hash and goes straight on to it, without waiting for the API thread', async () => {
  const cores = availableParallelism();
  assert.equal(hasher.threads, cores);
  await Promise.all(Array.from({ length: cores }, (_, i) => hasher.hash(`warm-${i}`))); // the threads have loaded
  let oneHashMs = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    await hasher.hash(`timed-${i}`);
    oneHashMs = Math.min(oneHashMs, performance.now() - started);
  }
  // Two hashes per thread go to the threads at once; two more wait in the pool's queue.
  const passwords = Array.from({ length: 2 * cores + 2 }, (_, i) => `pa55word-${i}`);
  const answeredAt: number[] = [];
  const hashing = Promise.all(passwords.map((password) => hasher.hash(password).finally(() => answeredAt.push(performance.now()))));
  assert.equal(hasher.internals.pool!.queueSize, 2, 'hashes left waiting beyond two per thread');
  // This thread now stays busy, as a loaded API thread may, for far longer than two hashes
  // take: each hashing thread computes both of its hashes meanwhile, and all four answers
  // are read as soon as this thread is free. A thread given one hash at a time would wait
  // for this one to hand over its second, whose answer would come a whole hash later.
  const busyUntil = performance.now() + Math.max(250, 20 * oneHashMs);
  while (performance.now() < busyUntil);
  const hashes = await hashing;
  const lastHandedOverMs = answeredAt[2 * cores - 1]! - busyUntil;
  assert.ok(lastHandedOverMs < 0.75 * oneHashMs, `the last of the hashes handed over was answered ${lastHandedOverMs.toFixed(1)} ms after this thread was free; one hash takes ${oneHashMs.toFixed(1)} ms`);
  for (const [i, passwordHash] of hashes.entries()) assert.ok(await verifyPassword(passwordHash, passwords[i]!));
});

test('a hash in progress is due within ten times what one took; none is due while none runs, nor for a cheap hash', async () => {
  const started = performance.now();
  await hasher.hash('pa55word-first');
  const oneHashMs = performance.now() - started;
  assert.equal(hasher.nextHashDoneInMs(), undefined, 'due with no hash running');
  const cheap = new PasswordHasher({ memoryKib: 64, iterations: 1 }, log);
  assert.equal(cheap.threads, 0, 'a cheap cost hashes without threads of its own');
  const cheapHash = cheap.hash('pa55word-cheap');
  assert.equal(cheap.nextHashDoneInMs(), undefined, 'a cheap hash counted');
  assert.ok(await verifyPassword(await cheapHash, 'pa55word-cheap'));
  const second = hasher.hash('pa55word-second');
  const dueInMs = hasher.nextHashDoneInMs();
  // 0 would be fair too, had this thread stalled past the estimate: only the bound is asserted.
  assert.ok(dueInMs !== undefined, 'no hash due while one runs');
  // The estimate averages the hashes of this file so far, some of which shared the cores.
  assert.ok(dueInMs < 10 * oneHashMs, `due in ${dueInMs.toFixed(1)} ms, one hash took ${oneHashMs.toFixed(1)} ms`);
  await second;
  assert.equal(hasher.nextHashDoneInMs(), undefined, 'due after the last hash ended');
});

test('closed, the hasher ends its threads and refuses further hashes', async () => {
  const closing = new PasswordHasher(REAL_COST, log);
  assert.ok(await verifyPassword(await closing.hash('pa55word-before'), 'pa55word-before'));
  await waitUntil(() => threadsOf(process.pid).filter((t) => t.name === HASH_THREAD_NAME).length === 2 * availableParallelism(), 10_000, () => 'both hashers\' threads');
  await closing.close(Date.now() + 10_000);
  await waitUntil(() => threadsOf(process.pid).filter((t) => t.name === HASH_THREAD_NAME).length === availableParallelism(), 10_000, () => 'the closed hasher\'s threads to end');
  await assert.rejects(closing.hash('pa55word-after'));
});
