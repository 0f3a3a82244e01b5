// The pool is destroyed only once its threads have loaded their modules: on Node 20,
// terminating a thread while its ES modules are being instantiated aborts the process.
// Real Piscina pools; a fixture thread whose loading the test holds and releases.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { settleBy } from '../src/deadline.js';
import { watchThreadLoading } from '../src/thread-loading.js';
import { runScript } from './support/command.js';
import './support/leak-check.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const gatedWorker = path.join(here, 'fixtures/gated-worker.js');

function gatedPool(threads: number) {
  const gate = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  const pool = new Piscina<number, number>({ filename: gatedWorker, minThreads: threads, maxThreads: threads, idleTimeout: Number.POSITIVE_INFINITY, atomics: 'disabled', workerData: gate });
  const open = () => {
    Atomics.store(new Int32Array(gate), 0, 1);
    Atomics.notify(new Int32Array(gate), 0);
  };
  return { pool, open };
}

test('allLoaded waits while threads are still loading, and resolves once every one has loaded', async () => {
  const { pool, open } = gatedPool(2);
  const loading = watchThreadLoading(pool);
  try {
    assert.equal(pool.threads.length, 2);
    const early = await settleBy(loading.allLoaded(), Date.now() + 300);
    assert.equal(early.timedOut, true, 'resolved while both threads were still held in their module');
    open();
    const loaded = await settleBy(loading.allLoaded(), Date.now() + 10_000);
    assert.equal(loaded.timedOut, false, 'never resolved after the threads loaded');
    assert.equal(await pool.run(7), 7);
  } finally {
    open();
    await pool.destroy();
  }
});

test('a thread that never finishes loading holds allLoaded back, and destroy still ends it', async () => {
  const { pool } = gatedPool(1);
  const loading = watchThreadLoading(pool);
  const waited = await settleBy(loading.allLoaded(), Date.now() + 200);
  assert.equal(waited.timedOut, true);
  const destroyed = await settleBy(pool.destroy(), Date.now() + 10_000);
  assert.equal(destroyed.timedOut, false, 'destroy did not end a thread blocked in its module');
  assert.equal(pool.threads.length, 0);
});

test('the mail worker pool destroyed 100 times at random moments of its loading never aborts the process', async () => {
  // In a child process: an abort takes the whole process down with it (exit code null, SIGABRT).
  const child = await runScript('test/fixtures/pool-churn.js', ['100'], {}, 120_000);
  assert.equal(child.code, 0, `the pool churn ended with code ${child.code}: ${child.stderr.slice(0, 600)}`);
  assert.match(child.stdout, /^100 pools destroyed/);
});
