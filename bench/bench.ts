// `npm run bench -- <scenario> [--runs N] [--out FILE] [options]`: the benchmarks, one
// command. Each scenario measures every figure once per run and reports the median of the
// runs next to each run's value; it prints a table and writes the same figures as JSON.
// Exit codes: 0 when nothing was lost (targets met or not: the table says), 1 when an
// accepted email was lost, 2 when the tool itself failed or was used wrongly.
import { writeFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { cleanUpOnInterrupt, CleanupStack } from '../test/support/scope.js';
import { VERSION as version } from '../src/version.js';
import { finish, fmt } from './common.js';
import { intOption, median, UsageError, type Outcome, type Scenario } from './scenario.js';
import { e2e } from './scenarios/e2e.js';
import { hash } from './scenarios/hash.js';
import { mail } from './scenarios/mail.js';
import { offload } from './scenarios/offload.js';

const scenarios: readonly Scenario[] = [e2e, hash, mail, offload];

const common = {
  runs: { type: 'string', default: '3' },
  out: { type: 'string' },
  help: { type: 'boolean', default: false },
} as const;

function usage(): string {
  const lines = scenarios.map((s) => `  ${s.name.padEnd(8)} ${s.summary}\n${optionsLine(s)}`);
  return `usage: npm run bench -- <scenario> [--runs 3] [--out bench-<scenario>.json] [options]\n${lines.join('\n')}\n`;
}

function optionsLine(scenario: Scenario): string {
  const list = Object.entries(scenario.options).map(([name, o]) => (o.type === 'boolean' ? `[--${name}]` : `[--${name} ${o.default === undefined ? 'X' : String(o.default)}]`));
  return `           ${list.join(' ')}`;
}

function printOutcome(scenario: Scenario, outcome: Outcome, runs: number): void {
  const rows = outcome.measures.map((m) => [m.name, `${fmt(median(m.values), 2)} ${m.unit}`, m.values.map((v) => fmt(v, 2)).join(' / '), m.note ?? '']);
  const header = ['measure', `median of ${runs}`, 'runs', ''];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
  const line = (cells: string[]) => `| ${cells.map((cell, c) => cell.padEnd(widths[c]!)).join(' | ')} |`;
  process.stdout.write(`\nbench ${scenario.name}: ${outcome.title}\n`);
  process.stdout.write(`mailoffload ${version}, ${availableParallelism()} cores, 1-min load average ${loadavg()[0]!.toFixed(1)} at the end\n\n`);
  process.stdout.write(`${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
  if (outcome.targets.length > 0) process.stdout.write(`\n${outcome.targets.map((t) => `${t.met ? 'MET    ' : 'NOT MET'} ${t.name}`).join('\n')}\n`);
  process.stdout.write(`\nlost=${outcome.lost}\n`);
}

const [name, ...rest] = process.argv.slice(2);
const scenario = scenarios.find((s) => s.name === name);
if (name === '--help' || name === '-h' || name === undefined) {
  process.stdout.write(usage());
  process.exit(name === undefined ? 2 : 0);
}
if (!scenario) {
  process.stderr.write(`bench: unknown scenario "${name}" (one of: ${scenarios.map((s) => s.name).join(', ')})\n`);
  process.exit(2);
}

const cleanup = new CleanupStack();
cleanUpOnInterrupt(cleanup);
try {
  const { values: args } = parseArgs({ args: rest, options: { ...common, ...scenario.options }, strict: true, allowPositionals: false });
  if (args.help) {
    process.stdout.write(`usage: npm run bench -- ${scenario.name} [--runs 3] [--out bench-${scenario.name}.json]\n${optionsLine(scenario)}\n${scenario.summary}\n`);
    process.exit(0);
  }
  const runs = intOption(args, 'runs');
  const out = typeof args.out === 'string' ? args.out : `bench-${scenario.name}.json`;
  const outcome = await scenario.run({ args, runs, cleanup, progress: (line) => process.stderr.write(`bench ${scenario.name}: ${line}\n`) });
  printOutcome(scenario, outcome, runs);
  const medians = Object.fromEntries(outcome.measures.map((m) => [m.name, median(m.values)]));
  writeFileSync(out, `${JSON.stringify({ scenario: scenario.name, version, runs, args, ...outcome, medians }, null, 2)}\n`);
  process.stdout.write(`(figures written to ${out})\n`);
  await finish(cleanup, outcome.lost > 0 ? 1 : 0);
} catch (error) {
  const usageError = error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.stderr.write(`bench ${scenario.name}: ${usageError ? (error as Error).message : error instanceof Error ? error.stack : String(error)}\n`);
  await finish(cleanup, 2);
}
