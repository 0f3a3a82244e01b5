// `npm run bench -- offload`: what offloading the welcome email buys. The same signup load
// against three handlers, each a child process: (a) this service, pool + outbox; (b) `await
// sendMail` on the API thread; (c) fire-and-forget on the API thread (offload-runs.ts). For
// each: requests/s, p99, the API thread's event-loop delay p99, emails lost when SIGTERM
// arrives halfway through a separate run, and the CPU the mail path costs per delivered email,
// service and PostgreSQL, against the email-disabled baseline measured in the same run. DKIM
// is on unless --no-dkim: signing is the CPU the pool is there to keep off the API thread.
// With --baseline DIR, another build of (a) runs the same throughput run in the rotation.
import { availableParallelism } from 'node:os';
import { buildsFrom, rotate, dkimEnv, startRig, type Build, type Rig } from '../rig.js';
import { intOption, type Context, type Measure, type Outcome, type Scenario, type Target } from '../scenario.js';
import { emailDisabled, HANDLERS, LABELS, sigterm, throughput, type EmailDisabled, type Handler, type Settings, type Terminated, type Throughput } from './offload-runs.js';

interface RunFigures {
  readonly throughput: Record<Handler, Throughput>;
  readonly terminated: Record<Handler, Terminated>;
  readonly disabled: EmailDisabled;
  /** (a) from the --baseline build. */
  readonly baseline?: Throughput;
}

type Step = Handler | 'email-disabled' | 'baseline';

const LOOP_TARGET_MS = 20;
const BASELINE_LABEL = '(a) the --baseline build';

function settingsOf(args: Context['args']): Settings {
  return {
    durationS: intOption(args, 'duration'),
    sigtermS: intOption(args, 'sigterm-duration', 2),
    connections: intOption(args, 'connections'),
    drainTimeoutMs: intOption(args, 'drain-timeout') * 1000,
    workers: args.workers === undefined ? undefined : intOption(args, 'workers'),
    // The hash is deliberately cheap by default, so that the mail path, not argon2, is measured.
    env: {
      ARGON2_MEMORY_KIB: String(intOption(args, 'argon2-memory-kib')),
      ARGON2_ITERATIONS: String(intOption(args, 'argon2-iterations')),
      LOG_LEVEL: 'info',
      ...(args['no-dkim'] ? {} : dkimEnv()),
    },
    args,
  };
}

/**
 * One run, in a rotated order: every handler's throughput and SIGTERM runs, the email-disabled
 * baseline and, with --baseline, the other build's (a) throughput run.
 */
async function measureRun(rig: Rig, settings: Settings, baseline: Build | undefined, run: number, progress: Context['progress']): Promise<RunFigures> {
  const figures = { throughput: {}, terminated: {} } as { throughput: Record<Handler, Throughput>; terminated: Record<Handler, Terminated>; disabled?: EmailDisabled; baseline?: Throughput };
  const steps: Step[] = [...HANDLERS, 'email-disabled', ...(baseline ? (['baseline'] as const) : [])];
  for (const step of rotate(steps, run)) {
    if (step === 'baseline') {
      progress(`run ${run + 1}, ${BASELINE_LABEL}: ${settings.durationS} s of signups`);
      const t = (figures.baseline = await throughput(rig, settings, 'a', `${run}-baseline`, baseline!));
      progress(`  ${t.requestsPerSecond.toFixed(0)} req/s, p99 ${t.p99Ms.toFixed(0)} ms, loop p99 ${t.loopP99Ms.toFixed(1)} ms, delivered ${t.delivered}/${t.accepted}`);
      continue;
    }
    progress(`run ${run + 1}, ${LABELS[step]}: ${settings.durationS} s of signups${step === 'email-disabled' ? '' : `, then ${settings.sigtermS} s with SIGTERM at ${settings.sigtermS / 2} s`}`);
    if (step === 'email-disabled') {
      figures.disabled = await emailDisabled(rig, settings, `${run}`);
      continue;
    }
    const t = (figures.throughput[step] = await throughput(rig, settings, step, `${run}`));
    const s = (figures.terminated[step] = await sigterm(rig, settings, step, `${run}`));
    const non2xx = Object.keys(t.non2xx).length > 0 ? ` non-2xx ${JSON.stringify(t.non2xx)}` : '';
    progress(`  ${t.requestsPerSecond.toFixed(0)} req/s, p99 ${t.p99Ms.toFixed(0)} ms, loop p99 ${t.loopP99Ms.toFixed(1)} ms, delivered ${t.delivered}/${t.accepted}${non2xx}; SIGTERM: lost ${s.lost} of ${s.accepted} (exit ${s.exit})`);
  }
  return figures as RunFigures;
}

/** Mail-path CPU per delivered email: what the run cost beyond the baseline's cost per signup. */
function mailCpu(t: Throughput, d: EmailDisabled): { service: number; postgres: number } {
  const delivered = Math.max(1, t.delivered);
  return { service: (t.serviceCpuMs - d.serviceCpuMsPerSignup * t.accepted) / delivered, postgres: (t.postgresCpuMs - d.postgresCpuMsPerSignup * t.accepted) / delivered };
}

/** The load figures of a throughput run, one value per run of the bench: for this build's handlers and the --baseline build's (a) alike. */
function loadMeasures(label: string, runs: readonly Throughput[]): Measure[] {
  const of = (pick: (t: Throughput) => number) => runs.map(pick);
  return [
    { name: `${label}: requests/s`, unit: '/s', values: of((t) => t.requestsPerSecond) },
    { name: `${label}: p99`, unit: 'ms', values: of((t) => t.p99Ms) },
    { name: `${label}: API event-loop delay p99`, unit: 'ms', values: of((t) => t.loopP99Ms) },
    { name: `${label}: API thread on a core`, unit: 's/s', values: of((t) => t.apiRunShare), note: 'per second of load, /proc schedstat' },
    { name: `${label}: API thread waiting for a core`, unit: 's/s', values: of((t) => t.apiWaitShare), note: 'runnable, not running' },
  ];
}

function measuresOf(runs: readonly RunFigures[]): Measure[] {
  const measures: Measure[] = [];
  for (const h of HANDLERS) {
    const of = (pick: (f: RunFigures) => number) => runs.map(pick);
    const label = LABELS[h];
    measures.push(
      ...loadMeasures(label, runs.map((f) => f.throughput[h])),
      { name: `${label}: mail CPU per email, service`, unit: 'ms', values: of((f) => mailCpu(f.throughput[h], f.disabled).service), note: 'minus the baseline per signup' },
      { name: `${label}: mail CPU per email, PostgreSQL`, unit: 'ms', values: of((f) => mailCpu(f.throughput[h], f.disabled).postgres), note: 'minus the baseline per signup' },
      { name: `${label}: lost on SIGTERM`, unit: '', values: of((f) => f.terminated[h].lost), note: `of ${runs.map((f) => f.terminated[h].accepted).join(' / ')} 202s` },
    );
  }
  if (runs.every((f) => f.baseline)) measures.push(...loadMeasures(BASELINE_LABEL, runs.map((f) => f.baseline!)));
  measures.push(
    { name: `${LABELS.a}: duplicates`, unit: '', values: runs.map((f) => f.throughput.a.duplicates) },
    { name: `${LABELS['email-disabled']}: requests/s`, unit: '/s', values: runs.map((f) => f.disabled.requestsPerSecond) },
    { name: `${LABELS['email-disabled']}: CPU per signup, service`, unit: 'ms', values: runs.map((f) => f.disabled.serviceCpuMsPerSignup) },
    { name: `${LABELS['email-disabled']}: CPU per signup, PostgreSQL`, unit: 'ms', values: runs.map((f) => f.disabled.postgresCpuMsPerSignup) },
  );
  return measures;
}

/** With DKIM at the default thread count, (a)'s event-loop delay p99 must stay under 20 ms in every run, not in the median. */
function targetsOf(runs: readonly RunFigures[], settings: Settings): Target[] {
  if (settings.env.DKIM_PRIVATE_KEY === undefined || settings.workers !== undefined) return [];
  const values = runs.map((f) => f.throughput.a.loopP99Ms);
  return [{ name: `(a) API event-loop delay p99 < ${LOOP_TARGET_MS} ms in every run, DKIM on (runs: ${values.map((v) => `${v.toFixed(1)} ms`).join(' / ')})`, met: values.every((v) => v < LOOP_TARGET_MS) }];
}

export const offload: Scenario = {
  name: 'offload',
  summary: 'signups with DKIM-signed welcome emails: (a) pool + outbox vs (b) await sendMail vs (c) fire-and-forget on the API thread: rates, p99, event-loop delay, lost on SIGTERM, mail CPU per email',
  options: {
    duration: { type: 'string', default: '10' },
    'sigterm-duration': { type: 'string', default: '4' },
    connections: { type: 'string', default: '50' },
    'argon2-memory-kib': { type: 'string', default: '64' },
    'argon2-iterations': { type: 'string', default: '1' },
    'smtp-latency-ms': { type: 'string', default: '10' },
    'no-dkim': { type: 'boolean', default: false },
    workers: { type: 'string' },
    // On 2 cores (a) takes signups faster than its 10 SMTP connections (2 mail threads x 5) send
    // their emails at 10 ms of latency each (500 to 700 a second): a 10 s load at 3,500
    // signups/s leaves a minute of email behind it.
    'drain-timeout': { type: 'string', default: '180' },
    'cpu-prof': { type: 'string' },
    baseline: { type: 'string' },
  },
  async run({ args, runs, cleanup, progress }: Context): Promise<Outcome> {
    const settings = settingsOf(args);
    const baseline = buildsFrom(args).find((build) => build.label === 'baseline');
    const rig = await startRig(cleanup, { smtpLatencyMs: intOption(args, 'smtp-latency-ms', 0) });
    const figures: RunFigures[] = [];
    for (let run = 0; run < runs; run++) figures.push(await measureRun(rig, settings, baseline, run, progress));
    const workers = settings.workers ?? availableParallelism();
    return {
      title:
        `${settings.connections} connections for ${settings.durationS} s per handler (+ ${settings.sigtermS} s with SIGTERM halfway); argon2id ${settings.env.ARGON2_MEMORY_KIB} KiB x ${settings.env.ARGON2_ITERATIONS}; ` +
        `SMTP latency ${String(args['smtp-latency-ms'])} ms; DKIM ${args['no-dkim'] ? 'off' : 'on (RSA-2048)'}; ${workers} mail threads${settings.workers === undefined ? ' (the default)' : ''}, (b) and (c) with as many pooled SMTP connections in all${baseline ? `; baseline: (a) from ${baseline.root}` : ''}`,
      measures: measuresOf(figures),
      targets: targetsOf(figures, settings),
      // The service must lose nothing, in the throughput run or on SIGTERM; (b) and (c) are the comparison.
      lost: figures.reduce((sum, f) => sum + f.throughput.a.lost + f.terminated.a.lost + (f.baseline?.lost ?? 0), 0),
      details: { settings: { ...settings, env: Object.keys(settings.env), args: undefined }, runs: figures },
    };
  },
};
