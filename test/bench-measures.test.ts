// The hash benchmark's own arithmetic: the raw rate around a sliced window, the latency a
// pause added, and a histogram quantile that leaves out the paused process's late timers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
// Nothing here opens a resource; the leak check proves it stays that way.
import './support/leak-check.js';
import { heldUpMs, rawAroundSlices } from '../bench/scenarios/hash.js';
import { histogramQuantile, Scrape } from './support/prom.js';

test('each slice is compared with the mean of the raw rates just before and just after it', () => {
  // Three slices between four raw rates: (100+200)/2, (200+300)/2, (300+100)/2.
  assert.equal(rawAroundSlices([100, 200, 300, 100]), (150 + 250 + 200) / 3);
  assert.equal(rawAroundSlices([120, 180]), 150, 'one slice: the mean of the two around it');
});

test('a request held up by pauses counts only the parts of them between its start and its answer', () => {
  const pauses = [
    { from: 1_000, to: 1_500 },
    { from: 3_000, to: 3_200 },
  ];
  assert.equal(heldUpMs({ startedAt: 1_200, answeredAt: 1_700 }, pauses), 300, 'started during the first pause');
  assert.equal(heldUpMs({ startedAt: 900, answeredAt: 3_100 }, pauses), 500 + 100, 'across one pause and into the next');
  assert.equal(heldUpMs({ startedAt: 1_600, answeredAt: 2_900 }, pauses), 0, 'between the pauses');
});

function histogram(counts: Record<string, number>): Scrape {
  return new Scrape(Object.entries(counts).map(([le, count]) => `delay_seconds_bucket{le="${le}"} ${count}`).join('\n'));
}

test('histogramQuantile can leave out the largest observations', () => {
  const before = histogram({ '0.01': 10, '1': 10, '+Inf': 10 });
  // 100 new observations: 97 under 10 ms, 3 between 10 ms and 1 s.
  const after = histogram({ '0.01': 107, '1': 110, '+Inf': 110 });
  assert.ok(histogramQuantile('delay_seconds', 0.99, after, before)! > 0.01, 'with the three slow ones, p99 is above 10 ms');
  assert.ok(histogramQuantile('delay_seconds', 0.99, after, before, 3)! <= 0.01, 'without them, p99 is within 10 ms');
  assert.equal(histogramQuantile('delay_seconds', 0.99, after, before, 100), undefined, 'nothing left: no quantile');
});
