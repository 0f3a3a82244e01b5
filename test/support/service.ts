// The compiled service (or another entry built like it) as a child process: real signals,
// exit codes, and its pino JSON log lines parsed as they arrive. At the end of its scope a
// child still running is stopped politely, then firmly, so that a failed assertion never
// leaves a process behind (nor the embedded PostgreSQL it may have started). startService
// spawns node itself; followService follows a child started any other way (`npm start`).
import { spawn, type ChildProcess } from 'node:child_process';
import { SERVICE_NODE_FLAGS } from '../../src/node-flags.js';
import { NO_RATE_LIMITS, projectRoot, serverEntry, TEST_ENV } from './env.js';
import { groupIsEmpty, signalGroup } from './processes.js';
import { closeAtEnd, track, type Scope } from './scope.js';
import { waitUntil } from './wait.js';

export type Exit = { code: number | null; signal: NodeJS.Signals | null };

export interface ServiceProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** The port from its `starting server` line (0 until then). */
  port: number;
  readonly url: string;
  /** Its JSON log lines (the newest MAX_LOG_LINES). */
  readonly logs: Record<string, unknown>[];
  /** stderr, and any stdout line that is not JSON. */
  readonly stderr: string[];
  readonly exited: Promise<Exit>;
  /** The first log line with this `msg`; rejects if the deadline passes or the process exits first. */
  waitForLog(msg: string, timeoutMs?: number): Promise<Record<string, unknown>>;
  kill(signal: NodeJS.Signals): void;
  /**
   * SIGTERM (unless it was signalled already), then SIGKILL if it has not exited after
   * `graceMs`; resolves once it has exited (with `processGroup`, once its group is empty).
   * Safe to call twice.
   */
  stop(graceMs?: number): Promise<Exit>;
}

export interface FollowOptions {
  /** For messages (default 'service'). */
  readonly name?: string;
  /** Wait for `starting server` and take the port from it (default true). */
  readonly waitReady?: boolean;
  readonly readyTimeoutMs?: number;
  /** How long a child still running at the end of the scope gets after SIGTERM (default 10 s). */
  readonly graceMs?: number;
  /**
   * The child leads a process group of its own (spawned `detached`), as `npm start` with its
   * shell and node under a terminal: the service counts as stopped only once the whole group
   * is gone (npm may exit before node), and the SIGKILL after `graceMs` goes to the group.
   */
  readonly processGroup?: boolean;
}

export interface ServiceOptions extends FollowOptions {
  /** The script to run (default: dist/src/server.js). */
  readonly entry?: string;
  /** Its working directory (default: the repository root). */
  readonly cwd?: string;
  /** Options for node before the script (default: the service's own, as `npm start` passes them). */
  readonly nodeArgs?: readonly string[];
}

/** A benchmark can run for minutes: keep memory bounded, keeping the newest lines. */
const MAX_LOG_LINES = 10_000;

function pushBounded<T>(list: T[], item: T, max: number): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

/**
 * Starts `entry` with only PATH, HOME and `env` in its environment (nothing of ours leaks in),
 * on a free port, logging JSON at info, with the signup rate limits off.
 */
export async function startService(scope: Scope, env: Record<string, string | undefined>, options: ServiceOptions = {}): Promise<ServiceProcess> {
  const child = spawn(process.execPath, [...(options.nodeArgs ?? SERVICE_NODE_FLAGS), options.entry ?? serverEntry], {
    cwd: options.cwd ?? projectRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: '0', LOG_LEVEL: 'info', ...NO_RATE_LIMITS, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return followService(scope, child, options);
}

/**
 * Follows a child that runs the service however it was started (node directly, or `npm start`
 * with npm's own output on stdout): JSON lines are its logs, anything else is kept with
 * stderr. The child must have been spawned with stdout and stderr piped.
 */
export async function followService(scope: Scope, child: ChildProcess, options: FollowOptions = {}): Promise<ServiceProcess> {
  const { name = 'service', waitReady = true, readyTimeoutMs = 60_000, graceMs = 10_000, processGroup = false } = options;
  const logs: Record<string, unknown>[] = [];
  const stderr: string[] = [];
  let buffer = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let newline: number;
    while ((newline = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
      try {
        pushBounded(logs, JSON.parse(line) as Record<string, unknown>, MAX_LOG_LINES);
      } catch {
        pushBounded(stderr, line, MAX_LOG_LINES);
      }
    }
  });
  child.stderr!.on('data', (chunk: Buffer) => pushBounded(stderr, chunk.toString('utf8'), MAX_LOG_LINES));
  let gone = false;
  const pid = child.pid!;
  const exited = new Promise<Exit>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  // Tracked until it exits, however it exits (a process group: until the group is empty).
  const untrack = track({ kind: 'service', label: `${name} (pid ${pid})`, forceClose: () => stop(0) });
  void exited.then(() => {
    gone = true;
    if (!processGroup) untrack();
  });
  const running = () => (processGroup ? !groupIsEmpty(pid) : !gone);
  const killHard = () => (processGroup ? signalGroup(pid, 'SIGKILL') : child.kill('SIGKILL'));
  // A second SIGTERM makes the service exit at once, cutting its drain: stop() signals only a
  // child that has not been signalled yet, and only once.
  let signalled = false;
  let stopping: Promise<Exit> | undefined;
  const stop = (grace = graceMs): Promise<Exit> =>
    (stopping ??= (async () => {
      if (!running()) {
        untrack();
        return exited;
      }
      if (!signalled) {
        // npm gone, node still running: the group's leader is no longer there to forward it.
        if (gone) signalGroup(pid, 'SIGTERM');
        else service.kill('SIGTERM');
      }
      const timer = setTimeout(killHard, grace);
      try {
        await exited;
        if (processGroup) await waitUntil(() => groupIsEmpty(pid), grace + 5_000, () => `the process group of ${name} (pid ${pid}) to be empty`);
      } finally {
        clearTimeout(timer);
      }
      untrack();
      return exited;
    })());
  closeAtEnd(scope, () => stop());
  const tail = () => stderr.join('').slice(-800);

  const service: ServiceProcess = {
    name,
    child,
    pid,
    port: 0,
    get url() {
      return `http://127.0.0.1:${this.port}`;
    },
    logs,
    stderr,
    exited,
    async waitForLog(msg, timeoutMs = 30_000) {
      let found: Record<string, unknown> | undefined;
      await waitUntil(
        () => {
          found = logs.find((line) => line.msg === msg);
          return found !== undefined || gone;
        },
        timeoutMs,
        () => `${name} to log "${msg}" (stderr: ${tail()})`,
      );
      if (!found) throw new Error(`${name} exited before logging "${msg}": ${tail()} ${JSON.stringify(logs.slice(-3))}`);
      return found;
    },
    kill(signal) {
      signalled = true;
      child.kill(signal);
    },
    stop,
  };
  if (waitReady) {
    const started = await service.waitForLog('starting server', readyTimeoutMs);
    service.port = Number(new URL(String(started.address)).port);
  }
  return service;
}

/** The service as the tests run it: TEST_ENV, then `env`. */
export function startTestService(scope: Scope, env: Record<string, string | undefined>, options?: ServiceOptions): Promise<ServiceProcess> {
  return startService(scope, { ...TEST_ENV, ...env }, options);
}
