import assert from 'node:assert/strict';
import { test } from 'node:test';
// Nothing here opens a resource; the leak check proves it stays that way.
import './support/leak-check.js';
import { WriteCoalescer } from '../src/mail/coalescer.js';

test('items added while a write is under way go out together in the next write', async () => {
  const writes: number[][] = [];
  let release!: () => void;
  const writer = new WriteCoalescer<number>(async (items) => {
    writes.push(items);
    if (writes.length === 1) await new Promise<void>((resolve) => (release = resolve));
  });
  const first = writer.add([1, 2]);
  const second = writer.add([3]);
  const third = writer.add([4, 5]);
  assert.deepEqual(writes, [[1, 2]], 'the first write starts at once, alone');
  release();
  await Promise.all([first, second, third]);
  assert.deepEqual(writes, [[1, 2], [3, 4, 5]]);
  await writer.add([]);
  assert.equal(writes.length, 2, 'nothing to write, no write');
});

test('a failed write rejects exactly its own callers; the next write still happens', async () => {
  let calls = 0;
  const written: number[][] = [];
  const writer = new WriteCoalescer<number>(async (items) => {
    calls++;
    if (calls === 1) {
      await new Promise((resolve) => setImmediate(resolve));
      throw new Error('database away');
    }
    written.push(items);
  });
  const failing = writer.add([1]);
  const later = writer.add([2, 3]);
  await assert.rejects(failing, /database away/);
  await later;
  assert.deepEqual(written, [[2, 3]]);
});
