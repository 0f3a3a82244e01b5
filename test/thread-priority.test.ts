// Thread priorities on Linux, read from /proc of the running service: the API thread keeps
// the process's nice value, the mail threads run at MAIL_WORKER_NICE, and libuv's pool threads
// (the password hashes) five steps below the API thread, on Node 22 and later, which name
// them. So the event loop takes a core back from any of them as soon as it has work. Real-cost
// hashes run one per core at a time.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { before, test } from 'node:test';
import { setImmediate as loopTurn } from 'node:timers/promises';
import { hashPassword, lowerHashThreadPriority, nextHashDoneInMs, verifyPassword } from '../src/passwords.js';
import { createTestDatabase, file, startSmtpSink, startTestService, uniqueEmail, waitUntil, type Database, type ServiceProcess, type SmtpSink } from './support/index.js';

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

const NODE_NAMES_THREADS = Number(process.versions.node.split('.')[0]) >= 22;
let db: Database;
let smtp: SmtpSink;
let service: ServiceProcess;

before(async () => {
  db = await createTestDatabase(file);
  smtp = await startSmtpSink(file);
  service = await startTestService(file, { DATABASE_URL: db.url, SMTP_URL: smtp.url, MAIL_WORKERS: '2', MAIL_WORKER_NICE: '12' });
  // One signup delivered: the mail threads have loaded their module (which sets their nice
  // value) and the hashing pool has worked.
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
  if (NODE_NAMES_THREADS) assert.ok(mail.every((t) => t.name === 'WorkerThread'), JSON.stringify(mail));
});

test('libuv pool threads, where the hashes run, are five nice steps below the API thread (Node 22+)', () => {
  const pool = threadsOf(service.pid).filter((t) => t.name === 'libuv-worker');
  if (NODE_NAMES_THREADS) {
    // libuv's default pool size.
    assert.equal(pool.length, 4, JSON.stringify(threadsOf(service.pid)));
    assert.ok(pool.every((t) => t.nice === 5), JSON.stringify(pool));
  } else {
    // Older Node names no thread: nothing can be told apart, and nothing is changed.
    assert.equal(pool.length, 0);
    assert.ok(threadsOf(service.pid).every((t) => t.nice === 0 || t.nice === 12));
  }
});

/** How many of this process's libuv pool threads are running or waiting for a core ('R'). */
function runnablePoolThreads(): number {
  return threadsOf(process.pid).filter((t) => t.name === 'libuv-worker' && t.state === 'R').length;
}

test('real-cost hashes: one per core at a time, with the pool threads below the API thread or not', async () => {
  const cores = availableParallelism();
  await lowerHashThreadPriority();
  // Two more hashes than cores at the default cost (19 MiB, tens of ms each): one per core
  // starts at once, the rest wait for a slot. Sampled without yielding, so no hash that ends
  // can hand its slot on meanwhile: the pool threads at work never exceed the limit.
  const cost = { memoryKib: 19_456, iterations: 2 };
  const passwords = Array.from({ length: cores + 2 }, (_, i) => `pa55word-${i}`);
  const hashing = Promise.all(passwords.map((password) => hashPassword(password, cost)));
  await loopTurn();
  let most = 0;
  const until = performance.now() + 30;
  while (performance.now() < until) most = Math.max(most, runnablePoolThreads());
  // Only Node 22 and later name the pool threads, so only there can they be counted.
  if (NODE_NAMES_THREADS) assert.equal(most, cores, 'pool threads hashing at once');
  const hashes = await hashing;
  for (const [i, passwordHash] of hashes.entries()) assert.ok(await verifyPassword(passwordHash, passwords[i]!));
});

test('a real-cost hash in progress is due within ten times what one took; none is due while none runs, nor for a cheap hash', async () => {
  const cost = { memoryKib: 19_456, iterations: 2 };
  const started = performance.now();
  await hashPassword('pa55word-first', cost);
  const oneHashMs = performance.now() - started;
  assert.equal(nextHashDoneInMs(), undefined, 'due with no hash running');
  const cheap = hashPassword('pa55word-cheap', { memoryKib: 64, iterations: 1 });
  assert.equal(nextHashDoneInMs(), undefined, 'a cheap hash counted');
  await cheap;
  const second = hashPassword('pa55word-second', cost);
  await loopTurn(); // the slot is taken on a later tick
  const dueInMs = nextHashDoneInMs();
  // 0 would be fair too, had this thread stalled past the estimate: only the bound is asserted.
  assert.ok(dueInMs !== undefined, 'no hash due while one runs');
  // The estimate averages the hashes of this file so far, some of which shared the cores.
  assert.ok(dueInMs < 10 * oneHashMs, `due in ${dueInMs.toFixed(1)} ms, one hash took ${oneHashMs.toFixed(1)} ms`);
  await second;
  assert.equal(nextHashDoneInMs(), undefined, 'due after the last hash ended');
});
