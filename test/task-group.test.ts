import assert from 'node:assert/strict';
import { test } from 'node:test';
// Nothing here opens a resource; the leak check proves it stays that way.
import './support/leak-check.js';
import { TaskGroup, TaskGroupClosedError } from '../src/task-group.js';

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const noErrors = () => {
  throw new Error('no task should fail in this test');
};

test('track returns the very promise it tracks, and size counts tasks and weights', async () => {
  const group = new TaskGroup(noErrors);
  assert.equal(group.size, 0);
  const a = deferred<string>();
  const b = deferred<number>();
  assert.equal(group.track(a.promise), a.promise);
  assert.equal(group.track(b.promise, { job: 'b' }, 32), b.promise);
  assert.equal(group.size, 33);
  a.resolve('done');
  assert.equal(await a.promise, 'done');
  assert.equal(group.size, 32);
  b.resolve(7);
  await b.promise;
  // The group's own bookkeeping runs in a reaction registered before ours: already settled.
  assert.equal(group.size, 0);
});

test('wait resolves as soon as the last task settles, in order', async () => {
  const group = new TaskGroup(noErrors);
  assert.deepEqual({ ...(await group.wait(0)), waitedMs: 0 }, { drained: true, pending: 0, waitedMs: 0 });

  const order: string[] = [];
  const first = deferred();
  const second = deferred();
  group.track(first.promise.then(() => order.push('first')));
  group.track(second.promise.then(() => order.push('second')));
  const waiting = group.wait(10_000).then((result) => {
    order.push('wait');
    return result;
  });
  first.resolve();
  await first.promise;
  second.resolve();
  const result = await waiting;
  assert.deepEqual(order, ['first', 'second', 'wait']);
  assert.equal(result.drained, true);
  assert.equal(result.pending, 0);
  assert.ok(result.waitedMs < 5_000, `waited ${result.waitedMs} ms for tasks that settled at once`);
});

test('wait reports what is still pending at the deadline, and the group keeps counting', async () => {
  const group = new TaskGroup(noErrors);
  const slow = deferred();
  group.track(slow.promise, {}, 3);
  const started = performance.now();
  const result = await group.wait(50);
  const elapsed = performance.now() - started;
  assert.equal(result.drained, false);
  assert.equal(result.pending, 3);
  assert.ok(elapsed >= 45, `wait returned after ${elapsed} ms, before its 50 ms deadline`);
  // A later wait still sees the task settle.
  const later = group.wait(10_000);
  slow.resolve();
  assert.deepEqual((await later).drained, true);
  assert.equal(group.size, 0);
});

test('a rejected task goes to the handler with its context, is never an unhandled rejection and does not stop the group', async () => {
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown) => unhandled.push(reason);
  process.on('unhandledRejection', onUnhandled);
  try {
    const failures: { error: unknown; context: Readonly<Record<string, unknown>> }[] = [];
    const group = new TaskGroup((error, context) => failures.push({ error, context }));
    const boom = new Error('smtp exploded');
    const failing = deferred();
    const healthy = deferred();
    // Nobody else handles the returned promise: only the group does.
    group.track(failing.promise, { outboxIds: [41, 42] }, 2);
    group.track(healthy.promise);
    failing.reject(boom);
    const waiting = group.wait(10_000);
    healthy.resolve();
    const result = await waiting;
    assert.equal(result.drained, true);
    assert.equal(group.size, 0);
    assert.deepEqual(failures, [{ error: boom, context: { outboxIds: [41, 42] } }]);

    // A handler that throws neither crashes the process nor leaves the task counted.
    const fragile = new TaskGroup(() => {
      throw new Error('handler failed');
    });
    const warnings: string[] = [];
    const onWarning = (warning: Error) => warnings.push(warning.message);
    process.on('warning', onWarning);
    const rejected = Promise.reject(new Error('task failed'));
    assert.equal(fragile.track(rejected), rejected);
    assert.equal((await fragile.wait(10_000)).drained, true);
    assert.equal(fragile.size, 0);

    // unhandledRejection and warning events are emitted after the microtask queue drains:
    // two turns of the event loop are enough for either to have fired.
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    assert.ok(warnings.some((message) => message.includes('handler failed')), 'the broken handler is reported as a warning');
    assert.deepEqual(unhandled, [], 'the tracked rejection was not reported as unhandled');
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});

test('close() refuses new tasks with TaskGroupClosedError while tracked ones finish', async () => {
  const group = new TaskGroup(noErrors);
  const running = deferred();
  group.track(running.promise);
  group.close();
  assert.equal(group.closed, true);
  assert.throws(() => group.track(Promise.resolve()), TaskGroupClosedError);
  assert.equal(group.size, 1);
  const waiting = group.wait(10_000);
  running.resolve();
  assert.equal((await waiting).drained, true);
  // Closing twice is safe.
  group.close();
  assert.throws(() => group.track(Promise.resolve()), (error: unknown) => error instanceof TaskGroupClosedError && /closed/.test(error.message));
});
