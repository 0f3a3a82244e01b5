// A built script of this project run to completion as a child process (a CLI such as
// `npm run outbox` or `npm run migrate`), with only PATH and the environment given.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from './env.js';

export interface CommandRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `dist/<script>` with `args`; a command that hangs past `timeoutMs` is killed, failing its test, not the run. */
export function runScript(script: string, args: readonly string[], env: Record<string, string>, timeoutMs = 90_000): Promise<CommandRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(projectRoot, 'dist', script), ...args], {
      cwd: projectRoot,
      env: { PATH: process.env.PATH, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
