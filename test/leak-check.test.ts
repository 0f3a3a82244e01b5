// The leak check of the support kit fails a test file that leaves something open, names it,
// and still lets the run end; a file that cleans up passes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { projectRoot } from './support/index.js';

const fixture = path.join(projectRoot, 'dist/test/fixtures/leaky.test-file.js');

/** Runs the fixture with node's test runner; `code` is null if it had to be killed (it hung). */
function runFixture(leak: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['--test', '--test-reporter=tap', fixture],
      { env: { PATH: process.env.PATH, LEAK: leak }, timeout: 30_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : null;
        resolve({ code, output: `${stdout}${stderr}` });
      },
    );
  });
}

test('a file that closes what it opened passes', async () => {
  const { code, output } = await runFixture('none');
  assert.equal(code, 0, output);
  assert.match(output, /^# pass 1$/m);
});

test('a socket server nobody closed fails the file, named by its handle type, and the run still ends', async () => {
  const { code, output } = await runFixture('server');
  assert.equal(code, 1, output);
  assert.match(output, /left resources behind/);
  assert.match(output, /TCPServerWrap x1/);
});

test('a kit resource whose scope never closed it fails the file, named by the kit', async () => {
  const { code, output } = await runFixture('sink');
  assert.equal(code, 1, output);
  assert.match(output, /smtp sink left open: port \d+/);
  // Closed by the check itself, so the process could exit: no lingering handle is reported.
  assert.doesNotMatch(output, /active handles beyond the baseline/);
});
