// `npm run bench -- hash`: signups/s at the service's default (OWASP) argon2id cost against
// what the same cores do hashing alone, measured in the same run: @node-rs/argon2 in this
// process, one hash per core at a time, just before and just after each window. The ratio is
// what everything else a signup does (HTTP, the signup statement, the welcome email) costs
// at that cost.
import { hash as argon2 } from '@node-rs/argon2';
import { availableParallelism } from 'node:os';
import { startSignupLoad, summarize } from '../../test/support/load.js';
import { histogramQuantile, scrape } from '../../test/support/prom.js';
import { acceptedSet, awaitDelivery } from '../common.js';
import { postgresCpuMs, processCpuMs, threadCpuMsByName } from '../proc-cpu.js';
import { buildOptions, buildsFrom, rotate, startBuild, startRig, withScope, type Build, type Rig } from '../rig.js';
import { intOption, medianOf, type Context, type Measure, type Outcome, type Scenario, type Values } from '../scenario.js';

/** The service's defaults (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS): OWASP's argon2id minimum. */
const OWASP = { memoryCost: 19_456, timeCost: 2, parallelism: 1, algorithm: 2 /* argon2id */ } as const;

/** Hashes/s of `parallel` hashes at a time, kept up for `seconds`. */
async function rawHashesPerSecond(parallel: number, seconds: number): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async (_, lane) => {
      while (performance.now() < deadline) {
        await argon2(`pa55word-${lane}-${done}`, OWASP);
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}

/**
 * The raw rate with the service paused (SIGSTOP: none of its threads runs, not even a timer),
 * so that the cores do nothing else, as when the tool runs alone; SIGCONT after.
 */
async function rawWhilePaused(servicePid: number, parallel: number, seconds: number): Promise<number> {
  process.kill(servicePid, 'SIGSTOP');
  try {
    return await rawHashesPerSecond(parallel, seconds);
  } finally {
    process.kill(servicePid, 'SIGCONT');
  }
}

/**
 * Where the cores went during the window, per signup: the service by kind of thread, then
 * PostgreSQL, then the rig's own parts (this process's load generator, the SMTP sink), which
 * share the cores with the service and which the raw rate never pays for.
 */
const CPU_PARTS = [
  ['password hashing (libuv pool)', 'libuv-worker'],
  ['mail threads', 'WorkerThread'],
  ['API thread', 'main'],
  ['V8 compiler and GC threads', 'V8Worker'],
] as const;

interface CpuSnapshot {
  readonly threads: Map<string, number>;
  readonly postgres: number;
  readonly tool: number;
  readonly sink: number;
}

function cpuSnapshot(rig: Rig, servicePid: number): CpuSnapshot {
  const self = process.cpuUsage();
  return { threads: threadCpuMsByName(servicePid), postgres: postgresCpuMs(rig.postmasterPid), tool: (self.user + self.system) / 1000, sink: processCpuMs(rig.sink.pid) };
}

/** ms of CPU per signup by part, between two snapshots. Node 20 names no thread: its parts are the API thread and the rest. */
function cpuPerSignup(start: CpuSnapshot, end: CpuSnapshot, signups: number): Record<string, number> {
  const threads = new Map([...end.threads].map(([name, ms]) => [name, ms - (start.threads.get(name) ?? 0)]));
  const parts: Record<string, number> = {};
  let named = 0;
  for (const [part, name] of CPU_PARTS) {
    const ms = threads.get(name);
    if (ms === undefined) continue;
    parts[part] = ms / signups;
    named += ms;
  }
  const all = [...threads.values()].reduce((sum, ms) => sum + ms, 0);
  parts['other service threads'] = (all - named) / signups;
  parts.PostgreSQL = (end.postgres - start.postgres) / signups;
  parts['load generator (this tool)'] = (end.tool - start.tool) / signups;
  parts['SMTP sink'] = (end.sink - start.sink) / signups;
  return parts;
}

async function serviceSignupsPerSecond(rig: Rig, build: Build, connections: number, seconds: number, warmSeconds: number, cores: number, args: Values, tag: string) {
  return withScope(async (scope) => {
    const service = await startBuild(scope, rig, build, { LOG_LEVEL: 'info' }, args);
    // A fresh process spends its first seconds compiling (V8's optimizing compiler runs on
    // threads of its own, in the service's CPU): warm it up by time, not by a request count,
    // so that the window measures the steady state, as the raw rate does.
    const warm = startSignupLoad(scope, { targets: [service.url], concurrency: connections, maxDurationMs: warmSeconds * 1000, requestTimeoutMs: 30_000, prefix: `warm-${tag}` });
    await warm.done;
    // The raw rate is measured just before and just after the window, half its length each,
    // and averaged: a shared host's speed drifts over minutes, and a raw rate taken a minute
    // away from the window it is compared with carries that drift into the ratio.
    const rawBefore = await rawWhilePaused(service.pid, cores, seconds / 2);
    // Resumed, the API thread's 10 ms sampler first records the pause as one late timer: a
    // scrape answered first puts that sample before the window's, not in it.
    await scrape(service.url);
    const before = await scrape(service.url);
    const cpuBefore = cpuSnapshot(rig, service.pid);
    const load = startSignupLoad(scope, { targets: [service.url], concurrency: connections, maxDurationMs: seconds * 1000, requestTimeoutMs: 30_000, prefix: `hash-${tag}` });
    await load.done;
    const cpuAfter = cpuSnapshot(rig, service.pid);
    const after = await scrape(service.url);
    const rawAfter = await rawWhilePaused(service.pid, cores, seconds / 2);
    const summary = summarize(load.outcomes);
    const delivery = await awaitDelivery(rig.sink, new Set([...acceptedSet(warm), ...acceptedSet(load)]), Date.now(), 60_000);
    await service.stop();
    return {
      signupsPerSecond: load.accepted().length / (summary.durationMs / 1000),
      rawPerSecond: (rawBefore + rawAfter) / 2,
      p99Ms: summary.latencyMs.p99,
      loopP99Ms: (histogramQuantile('mailoffload_eventloop_delay_seconds', 0.99, after, before) ?? Number.NaN) * 1000,
      cpuMsPerSignup: cpuPerSignup(cpuBefore, cpuAfter, load.accepted().length),
      lost: delivery.lost,
    };
  });
}

export const hash: Scenario = {
  name: 'hash',
  summary: 'signups/s at the OWASP argon2id cost (19456 KiB x 2) against raw argon2 hashes/s on the same cores, same run',
  options: {
    connections: { type: 'string', default: '32' },
    seconds: { type: 'string', default: '10' },
    'warm-seconds': { type: 'string', default: '30' },
    ...buildOptions,
  },
  async run({ args, runs, cleanup, progress }: Context): Promise<Outcome> {
    const connections = intOption(args, 'connections');
    const seconds = intOption(args, 'seconds');
    const warmSeconds = intOption(args, 'warm-seconds');
    const cores = availableParallelism();
    const builds = buildsFrom(args);
    const rig = await startRig(cleanup);
    await rawHashesPerSecond(cores, 1); // warm up
    const signups = new Map<string, { signupsPerSecond: number; rawPerSecond: number; p99Ms: number; loopP99Ms: number; cpuMsPerSignup: Record<string, number>; lost: number }[]>(builds.map((b) => [b.label, []]));
    for (let run = 0; run < runs; run++) {
      for (const build of rotate(builds, run)) {
        const figures = await serviceSignupsPerSecond(rig, build, connections, seconds, warmSeconds, cores, args, `${build.label}-${run}`);
        signups.get(build.label)!.push(figures);
        progress(`run ${run + 1}/${runs}: ${build.label} ${figures.signupsPerSecond.toFixed(1)} signups/s against raw argon2 ${figures.rawPerSecond.toFixed(1)} hashes/s, p99 ${figures.p99Ms.toFixed(0)} ms, event-loop delay p99 ${figures.loopP99Ms.toFixed(1)} ms`);
      }
    }
    const measures: Measure[] = [];
    for (const build of builds) {
      const suffix = build.label === 'this' ? '' : ` (${build.label})`;
      const list = signups.get(build.label)!;
      measures.push({ name: `raw argon2id hashes/s${suffix}`, unit: '/s', values: list.map((f) => f.rawPerSecond), note: `${cores} at a time, in the bench process, around the window` });
      measures.push({ name: `signups/s${suffix}`, unit: '/s', values: list.map((f) => f.signupsPerSecond) });
      measures.push({ name: `signups / raw hashes${suffix}`, unit: 'x', values: list.map((f) => f.signupsPerSecond / f.rawPerSecond) });
      measures.push({ name: `signup p99${suffix}`, unit: 'ms', values: list.map((f) => f.p99Ms) });
      measures.push({ name: `event-loop delay p99${suffix}`, unit: 'ms', values: list.map((f) => f.loopP99Ms), note: 'mailoffload_eventloop_delay_seconds' });
      for (const part of Object.keys(list[0]?.cpuMsPerSignup ?? {})) {
        measures.push({ name: `  CPU per signup: ${part}${suffix}`, unit: 'ms', values: list.map((f) => f.cpuMsPerSignup[part] ?? Number.NaN), note: part === 'password hashing (libuv pool)' ? 'from /proc, over the window' : '' });
      }
    }
    const ratio = medianOf(measures, 'signups / raw hashes');
    return {
      title: `${connections} clients for ${seconds} s per build after ${warmSeconds} s of warm-up, argon2id ${OWASP.memoryCost} KiB x ${OWASP.timeCost}; raw: ${cores} hashes at a time for ${seconds / 2} s just before and just after each window, the service paused; builds: ${builds.map((b) => `${b.label} (${b.root})`).join(', ')}`,
      measures,
      targets: [{ name: `signups/s >= 80 % of raw argon2 hashes/s, same run (${(ratio * 100).toFixed(0)} %)`, met: ratio >= 0.8 }],
      lost: [...signups.values()].flat().reduce((sum, f) => sum + f.lost, 0),
      details: { connections, seconds, warmSeconds, cores, runs: Object.fromEntries(signups) },
    };
  },
};
