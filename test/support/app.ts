// The real app, in-process (app.inject, or listening on a loopback port), with the service's
// own logger settings writing to memory so that tests can assert on log lines.
import { Writable } from 'node:stream';
import { buildApp } from '../../src/app.js';
import { loadConfig, type Config } from '../../src/config.js';
import { createLogger } from '../../src/logger.js';
import { TEST_ENV } from './env.js';
import { closeAtEnd, once, track, type Scope } from './scope.js';

/** Log lines captured in memory: tests assert on them (and on what they never contain). */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  readonly raw: string[] = [];
  override _write(chunk: Buffer, _encoding: string, callback: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      this.raw.push(line);
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not JSON: kept in raw only
      }
    }
    callback();
  }
  messages(): string[] {
    return this.lines.map((line) => String(line.msg));
  }
}

export function testConfig(env: Record<string, string | undefined>): Config {
  return loadConfig({ PORT: '0', LOG_LEVEL: 'info', ...TEST_ENV, ...env });
}

export type TestApp = Awaited<ReturnType<typeof buildApp>>;

/** The app, ready, closed at the end of `t` (a test's context, or the file's scope). */
export async function buildTestApp(t: Scope, env: Record<string, string | undefined>) {
  const logs = new LogCapture();
  const config = testConfig(env);
  // The service's own logger settings (redaction, error serializer), writing to memory.
  const logger = createLogger(config.logLevel, logs);
  const app = await buildApp(config, logger);
  const close = once(async () => {
    await app.close();
    untrack();
  });
  const untrack = track({ kind: 'app', label: 'buildTestApp', forceClose: close });
  closeAtEnd(t, close);
  await app.ready();
  return { app, logs, config };
}

/** Listens on a free loopback port; the app's close closes the server too. */
export async function listen(app: TestApp): Promise<{ url: string; port: number }> {
  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, port };
}
