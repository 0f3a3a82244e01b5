// `npm run bench -- hash`: signups/s at the service's default (OWASP) argon2id cost against
// what the same cores do hashing alone, measured in the same run: @node-rs/argon2 in this
// process, one hash per core at a time, before, between and after the slices of each window.
// The ratio is what everything else a signup does (HTTP, the signup statement, the welcome
// email) costs at that cost.
import { hash as argon2 } from '@node-rs/argon2';
import { availableParallelism } from 'node:os';
import { setTimeout } from 'node:timers/promises';
import { argon2idOptions, HASH_THREAD_NAME } from '../../src/password-contract.js';
import { PasswordHasher } from '../../src/passwords.js';
import { startSignupLoad, summarize, type SignupOutcome } from '../../test/support/load.js';
import { histogramQuantile, scrape } from '../../test/support/prom.js';
import { acceptedSet, awaitDelivery } from '../common.js';
import { mainThreadCpuMs, postgresCpuMs, processCpuMs, threadCpuMsByName } from '../proc-cpu.js';
import { buildOptions, buildsFrom, rotate, startBuild, startRig, withScope, type Build, type Rig } from '../rig.js';
import { intOption, medianOf, type Context, type Measure, type Outcome, type Scenario, type Values } from '../scenario.js';

/** The service's defaults (ARGON2_MEMORY_KIB, ARGON2_ITERATIONS): OWASP's argon2id minimum. */
const OWASP_COST = { memoryKib: 19_456, iterations: 2 } as const;
const OWASP = argon2idOptions(OWASP_COST.memoryKib, OWASP_COST.iterations);

/** Hashes/s of `hashOne`, `parallel` hashes at a time, kept up for `seconds`. */
async function hashesPerSecond(hashOne: (password: string) => Promise<unknown>, parallel: number, seconds: number): Promise<number> {
  const deadline = performance.now() + seconds * 1000;
  let done = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: parallel }, async (_, lane) => {
      while (performance.now() < deadline) {
        await hashOne(`pa55word-${lane}-${done}`);
        done++;
      }
    }),
  );
  return done / ((performance.now() - started) / 1000);
}

/** Epoch ms with a fraction, as the load generator stamps its answers. */
const now = () => performance.timeOrigin + performance.now();

export interface Interval {
  readonly from: number;
  readonly to: number;
}

/** What the cores hash alone, measured two ways in the same pause. */
interface RawRates {
  /** @node-rs/argon2's async API, one hash per core at a time: the target's raw rate. */
  readonly library: number;
  /** The service's PasswordHasher: threads of its own, each holding its next hash. */
  readonly threads: number;
}

/**
 * The raw rates with the service paused (SIGSTOP: none of its threads runs, not even a
 * timer), so that the cores do nothing else, as when the tool runs alone; SIGCONT after. Half
 * the pause measures @node-rs/argon2's async API, half the service's own hasher.
 */
async function rawWhilePaused(servicePid: number, hasher: PasswordHasher, parallel: number, seconds: number, pauses: Interval[]): Promise<RawRates> {
  const from = now();
  process.kill(servicePid, 'SIGSTOP');
  try {
    const library = await hashesPerSecond((password) => argon2(password, OWASP), parallel, seconds / 2);
    // Two hashes per thread in flight, as the hasher hands them to its threads.
    const threads = await hashesPerSecond((password) => hasher.hash(password), 2 * parallel, seconds / 2);
    return { library, threads };
  } finally {
    process.kill(servicePid, 'SIGCONT');
    pauses.push({ from, to: now() });
  }
}

/** How long pauses held up a request: the parts of them between its start and its answer. */
export function heldUpMs(outcome: Pick<SignupOutcome, 'startedAt' | 'answeredAt'>, pauses: readonly Interval[]): number {
  return pauses.reduce((sum, pause) => sum + Math.max(0, Math.min(pause.to, outcome.answeredAt) - Math.max(pause.from, outcome.startedAt)), 0);
}

/**
 * The raw rate over the window, from the rates measured before, between and after its
 * slices: each slice is compared with the mean of the two raw rates around it.
 */
export function rawAroundSlices(rates: readonly number[]): number {
  const slices = rates.length - 1;
  let sum = 0;
  for (let i = 0; i < slices; i++) sum += (rates[i]! + rates[i + 1]!) / 2;
  return sum / slices;
}

/**
 * Where the cores went during the window, per signup: the service by kind of thread, then
 * PostgreSQL, then the rig's own parts (this process's load generator, the SMTP sink), which
 * share the cores with the service and which the raw rate never pays for.
 */
const CPU_PARTS = [
  ['password hashing (argon2 threads)', HASH_THREAD_NAME],
  // Builds before cut 13 hash here; since, it holds cheap work (random bytes for tokens).
  ['libuv pool', 'libuv-worker'],
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

/**
 * The tool's part is this process's main thread, where the load generator runs (its raw
 * hashes run on libuv's pool and on its own hasher's threads, and only between slices).
 */
function cpuSnapshot(rig: Rig, servicePid: number): CpuSnapshot {
  return { threads: threadCpuMsByName(servicePid), postgres: postgresCpuMs(rig.postmasterPid), tool: mainThreadCpuMs(process.pid), sink: processCpuMs(rig.sink.pid) };
}

/** ms of CPU per signup by part, summed over the slices' snapshots. Node 20 and 22 do not name the mail and V8 threads: they are "other" there. */
function cpuPerSignup(slices: readonly (readonly [CpuSnapshot, CpuSnapshot])[], signups: number): Record<string, number> {
  const threads = new Map<string, number>();
  let postgres = 0;
  let tool = 0;
  let sink = 0;
  for (const [start, end] of slices) {
    for (const [name, ms] of end.threads) threads.set(name, (threads.get(name) ?? 0) + ms - (start.threads.get(name) ?? 0));
    postgres += end.postgres - start.postgres;
    tool += end.tool - start.tool;
    sink += end.sink - start.sink;
  }
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
  parts.PostgreSQL = postgres / signups;
  parts['load generator (this tool)'] = tool / signups;
  parts['SMTP sink'] = sink / signups;
  return parts;
}

interface Interleaving {
  readonly connections: number;
  readonly seconds: number;
  readonly warmSeconds: number;
  readonly slices: number;
  readonly cores: number;
}

/**
 * One build's figures. One load runs from the warm-up to the window's end, so the window
 * starts in the steady state (not with every client's first request at once). The window is
 * cut into slices, and the raw rate is measured, with the service paused, before, between and
 * after them: a shared host's speed drifts over seconds to minutes, and a raw rate taken away
 * from the load it is compared with carries that drift into the ratio. Signups, CPU and
 * latencies count only while the service runs.
 */
async function serviceSignupsPerSecond(rig: Rig, build: Build, hasher: PasswordHasher, plan: Interleaving, args: Values, tag: string) {
  return withScope(async (scope) => {
    const service = await startBuild(scope, rig, build, { LOG_LEVEL: 'info' }, args);
    const load = startSignupLoad(scope, { targets: [service.url], concurrency: plan.connections, maxDurationMs: 3_600_000, requestTimeoutMs: 30_000, prefix: `hash-${tag}` });
    // A fresh process spends its first seconds compiling (V8's optimizing compiler runs on
    // threads of its own, in the service's CPU): warm it up by time, not by a request count,
    // so that the window measures the steady state, as the raw rate does.
    await setTimeout(plan.warmSeconds * 1000);
    const sliceMs = (plan.seconds * 1000) / plan.slices;
    const rawSeconds = sliceMs / 2000;
    const pauses: Interval[] = [];
    const rawRates = [await rawWhilePaused(service.pid, hasher, plan.cores, rawSeconds, pauses)];
    // Resumed, the API thread's 10 ms sampler first records the pause as one late timer: a
    // scrape answered first puts that sample before the window's. The pauses between slices
    // each leave one such sample in the window: they are left out of its p99.
    const before = await scrape(service.url);
    const running: Interval[] = [];
    const cpu: (readonly [CpuSnapshot, CpuSnapshot])[] = [];
    for (let slice = 0; slice < plan.slices; slice++) {
      if (slice > 0) rawRates.push(await rawWhilePaused(service.pid, hasher, plan.cores, rawSeconds, pauses));
      const from = now();
      const cpuFrom = cpuSnapshot(rig, service.pid);
      await setTimeout(sliceMs);
      cpu.push([cpuFrom, cpuSnapshot(rig, service.pid)]);
      running.push({ from, to: now() });
    }
    const after = await scrape(service.url);
    rawRates.push(await rawWhilePaused(service.pid, hasher, plan.cores, rawSeconds, pauses));
    await load.stop();
    // Answers that arrive while the service is paused were sent before it was: they belong to
    // the slice just before. A request that a pause held up counts its latency without it.
    const windowStart = running[0]!.from;
    const windowEnd = running.at(-1)!.to;
    const inWindow = load.accepted().filter((o) => o.answeredAt >= windowStart && o.answeredAt <= windowEnd);
    const latencies = inWindow.map((o) => ({ ...o, elapsedMs: o.elapsedMs - heldUpMs(o, pauses) }));
    const runningSeconds = running.reduce((sum, r) => sum + (r.to - r.from), 0) / 1000;
    const delivery = await awaitDelivery(rig.sink, acceptedSet(load), Date.now(), 60_000);
    await service.stop();
    return {
      signupsPerSecond: inWindow.length / runningSeconds,
      rawPerSecond: rawAroundSlices(rawRates.map((r) => r.library)),
      rawOnThreadsPerSecond: rawAroundSlices(rawRates.map((r) => r.threads)),
      p99Ms: summarize(latencies).latencyMs.p99,
      loopP99Ms: (histogramQuantile('mailoffload_eventloop_delay_seconds', 0.99, after, before, plan.slices - 1) ?? Number.NaN) * 1000,
      cpuMsPerSignup: cpuPerSignup(cpu, inWindow.length),
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
    slices: { type: 'string', default: '5' },
    'warm-seconds': { type: 'string', default: '30' },
    ...buildOptions,
  },
  async run({ args, runs, cleanup, progress }: Context): Promise<Outcome> {
    const connections = intOption(args, 'connections');
    const seconds = intOption(args, 'seconds');
    const warmSeconds = intOption(args, 'warm-seconds');
    const slices = intOption(args, 'slices');
    const cores = availableParallelism();
    const plan: Interleaving = { connections, seconds, warmSeconds, slices, cores };
    const builds = buildsFrom(args);
    const rig = await startRig(cleanup);
    const hasher = new PasswordHasher(OWASP_COST, rig.log);
    cleanup.after(() => hasher.close(Date.now() + 10_000));
    // Warm up both ways of hashing (the hasher's threads load their module).
    await hashesPerSecond((password) => argon2(password, OWASP), cores, 1);
    await hashesPerSecond((password) => hasher.hash(password), 2 * cores, 1);
    const signups = new Map<string, Awaited<ReturnType<typeof serviceSignupsPerSecond>>[]>(builds.map((b) => [b.label, []]));
    for (let run = 0; run < runs; run++) {
      for (const build of rotate(builds, run)) {
        const figures = await serviceSignupsPerSecond(rig, build, hasher, plan, args, `${build.label}-${run}`);
        signups.get(build.label)!.push(figures);
        progress(`run ${run + 1}/${runs}: ${build.label} ${figures.signupsPerSecond.toFixed(1)} signups/s against raw argon2 ${figures.rawPerSecond.toFixed(1)} hashes/s, p99 ${figures.p99Ms.toFixed(0)} ms, event-loop delay p99 ${figures.loopP99Ms.toFixed(1)} ms`);
      }
    }
    const measures: Measure[] = [];
    for (const build of builds) {
      const suffix = build.label === 'this' ? '' : ` (${build.label})`;
      const list = signups.get(build.label)!;
      measures.push({ name: `raw argon2id hashes/s${suffix}`, unit: '/s', values: list.map((f) => f.rawPerSecond), note: `${cores} at a time, in the bench process, between the window's slices` });
      measures.push({ name: `signups/s${suffix}`, unit: '/s', values: list.map((f) => f.signupsPerSecond) });
      measures.push({ name: `signups / raw hashes${suffix}`, unit: 'x', values: list.map((f) => f.signupsPerSecond / f.rawPerSecond) });
      measures.push({ name: `raw hashes/s on the service's hashing threads${suffix}`, unit: '/s', values: list.map((f) => f.rawOnThreadsPerSecond), note: `${cores} threads, each holding its next hash, in the bench process` });
      measures.push({ name: `signups / raw hashes on those threads${suffix}`, unit: 'x', values: list.map((f) => f.signupsPerSecond / f.rawOnThreadsPerSecond) });
      measures.push({ name: `signup p99${suffix}`, unit: 'ms', values: list.map((f) => f.p99Ms) });
      measures.push({ name: `event-loop delay p99${suffix}`, unit: 'ms', values: list.map((f) => f.loopP99Ms), note: 'mailoffload_eventloop_delay_seconds' });
      for (const part of Object.keys(list[0]?.cpuMsPerSignup ?? {})) {
        measures.push({ name: `  CPU per signup: ${part}${suffix}`, unit: 'ms', values: list.map((f) => f.cpuMsPerSignup[part] ?? Number.NaN), note: part === CPU_PARTS[0][0] ? 'from /proc, over the window' : '' });
      }
    }
    const ratio = medianOf(measures, 'signups / raw hashes');
    return {
      title: `${connections} clients for ${seconds} s per build in ${slices} slices after ${warmSeconds} s of warm-up, argon2id ${OWASP_COST.memoryKib} KiB x ${OWASP_COST.iterations}; raw: ${cores} hashes at a time with @node-rs/argon2's async API, then on the service's hashing threads, for ${seconds / slices / 4} s each before, between and after the slices, the service paused; builds: ${builds.map((b) => `${b.label} (${b.root})`).join(', ')}`,
      measures,
      targets: [{ name: `signups/s >= 80 % of raw argon2 hashes/s (@node-rs/argon2's async API), same run (${(ratio * 100).toFixed(0)} %; on the service's hashing threads ${(medianOf(measures, 'signups / raw hashes on those threads') * 100).toFixed(0)} %)`, met: ratio >= 0.8 }],
      lost: [...signups.values()].flat().reduce((sum, f) => sum + f.lost, 0),
      details: { connections, seconds, slices, warmSeconds, cores, runs: Object.fromEntries(signups) },
    };
  },
};
