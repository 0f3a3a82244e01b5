// The SMTP sink in a child process of its own (smtp-sink-child.ts), for the benchmarks: the
// parent asks it for counts over IPC, and can stall and resume it. `report()` carries every
// recipient; `total()` only the count of accepted messages, cheap enough to ask every second.
import { fork } from 'node:child_process';
import path from 'node:path';
import { projectRoot } from './env.js';
import { closeAtEnd, once, track, type Scope } from './scope.js';

const childEntry = path.join(projectRoot, 'dist/test/support/smtp-sink-child.js');

export type SinkCommand = { readonly type: 'stall' | 'resume' } | { readonly type: 'report' | 'total' | 'times'; readonly id: number };

export interface SinkReport {
  readonly total: number;
  readonly held: number;
  readonly duplicateMessageIds: number;
  readonly byRecipient: Map<string, number>;
}

export type SinkMessage =
  | { readonly type: 'listening'; readonly port: number }
  | ({ readonly type: 'report'; readonly id: number; readonly byRecipient: [string, number][] } & Omit<SinkReport, 'byRecipient'>)
  | { readonly type: 'total'; readonly id: number; readonly total: number }
  | { readonly type: 'times'; readonly id: number; readonly firstAcceptedAt: [string, number][] };

export interface SinkProcess {
  readonly url: string;
  readonly pid: number;
  stall(): void;
  resume(): void;
  report(): Promise<SinkReport>;
  /** Messages accepted so far. */
  total(): Promise<number>;
  /** When each recipient's first message was accepted (ms since the epoch, with a fraction). */
  acceptedTimes(): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

export async function startSmtpSinkProcess(scope: Scope, { latencyMs = 0 } = {}): Promise<SinkProcess> {
  // Without V8's background GC threads: the sink shares the cores with what the benchmarks measure.
  const child = fork(childEntry, [], { execArgv: [...process.execArgv, '--single-threaded-gc'], env: { ...process.env, SINK_LATENCY_MS: String(latencyMs) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = once(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await exited;
    untrack();
  });
  const untrack = track({ kind: 'smtp sink process', label: `pid ${child.pid}`, forceClose: stop });
  closeAtEnd(scope, stop);
  const port = await new Promise<number>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`SMTP sink exited during start (${code})`)));
    child.on('message', (message: SinkMessage) => {
      if (message.type === 'listening') resolve(message.port);
    });
  });
  let nextId = 0;
  const ask = <T extends SinkMessage['type']>(type: T & SinkCommand['type']): Promise<Extract<SinkMessage, { type: T }>> =>
    new Promise((resolve) => {
      const id = ++nextId;
      const onMessage = (message: SinkMessage) => {
        if (message.type !== type || !('id' in message) || message.id !== id) return;
        child.off('message', onMessage);
        resolve(message as Extract<SinkMessage, { type: T }>);
      };
      child.on('message', onMessage);
      child.send({ type, id } as SinkCommand);
    });
  return {
    url: `smtp://127.0.0.1:${port}`,
    pid: child.pid!,
    stall: () => child.send({ type: 'stall' } satisfies SinkCommand),
    resume: () => child.send({ type: 'resume' } satisfies SinkCommand),
    report: async () => {
      const message = await ask('report');
      return { ...message, byRecipient: new Map(message.byRecipient) };
    },
    total: async () => (await ask('total')).total,
    acceptedTimes: async () => new Map((await ask('times')).firstAcceptedAt),
    stop,
  };
}
