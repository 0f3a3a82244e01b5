// `npm run bench`: a mistake on its command line is one line on stderr and exit 2, before
// anything is started or written.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runScript } from './support/index.js';

const cases: [string, string[], RegExp][] = [
  ['an unknown scenario', ['nosuch'], /unknown scenario "nosuch" \(one of: e2e, hash, mail, offload\)/],
  ['an unknown option', ['e2e', '--bogus'], /Unknown option '--bogus'/],
  ['a run count of 0', ['e2e', '--runs', '0'], /--runs must be a whole number of at least 1 \(got 0\)/],
  ['a count that is not a number', ['hash', '--seconds', 'ten'], /--seconds must be a whole number of at least 1 \(got ten\)/],
  ['a warm-up that is not a number', ['e2e', '--warm-up', '1e4'], /--warm-up must be a whole number of at least 0 \(got 1e4\)/],
  ['a baseline that is not a built checkout', ['e2e', '--baseline', '/nonexistent'], /--baseline \/nonexistent: not a built checkout/],
  ['an offload baseline that is not a built checkout', ['offload', '--baseline', '/nonexistent'], /--baseline \/nonexistent: not a built checkout/],
];

for (const [what, args, message] of cases) {
  test(`bench: ${what} is refused with one line and exit 2`, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mailoffload-bench-cli-'));
    try {
      const out = path.join(dir, 'figures.json');
      const run = await runScript('bench/bench.js', [...args, '--out', out], {});
      assert.equal(run.code, 2, run.stderr);
      assert.match(run.stderr, message);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.equal(existsSync(out), false, 'no figures written');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('bench --help lists every scenario and exits 0', async () => {
  const run = await runScript('bench/bench.js', ['--help'], {});
  assert.equal(run.code, 0, run.stderr);
  for (const scenario of ['e2e', 'hash', 'mail', 'offload']) assert.match(run.stdout, new RegExp(`^  ${scenario} `, 'm'));
});
