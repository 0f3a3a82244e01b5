// What every `npm run bench` scenario is: its options, and a run that returns measures (one
// value per run, summarised by their median) and targets. bench/bench.ts parses the command
// line, runs the scenario, prints the table and writes the JSON.
import type { ParseArgsConfig } from 'node:util';
import type { CleanupStack } from '../test/support/scope.js';

export type Options = NonNullable<ParseArgsConfig['options']>;
export type Values = Record<string, string | boolean | undefined>;

export interface Context {
  /** The scenario's options, and the common ones (runs, out, baseline, cpu-prof). */
  readonly args: Values;
  readonly runs: number;
  readonly cleanup: CleanupStack;
  /** A progress line on stderr. */
  progress(line: string): void;
}

export interface Measure {
  readonly name: string;
  readonly unit: string;
  /** One value per run, in run order. */
  readonly values: readonly number[];
  /** How to read it ("lower is better", a ratio's definition…). */
  readonly note?: string;
}

export interface Target {
  readonly name: string;
  readonly met: boolean;
}

export interface Outcome {
  /** The first line of the printed table: what was run, with which settings. */
  readonly title: string;
  readonly measures: readonly Measure[];
  readonly targets: readonly Target[];
  /** Emails accepted but never delivered, over every run (the tool exits 1 when > 0). */
  readonly lost: number;
  /** Anything else worth keeping in the JSON (settings, per-run details). */
  readonly details?: unknown;
}

export interface Scenario {
  readonly name: string;
  /** One line for `--help`. */
  readonly summary: string;
  readonly options: Options;
  run(context: Context): Promise<Outcome>;
}

export const median = (values: readonly number[]): number => {
  const sorted = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
};

/** The measure with this name's median (NaN when absent). */
export function medianOf(measures: readonly Measure[], name: string): number {
  return median(measures.find((m) => m.name === name)?.values ?? []);
}

/** An integer option of at least `min`, or a one-line error naming it. */
export function intOption(args: Values, name: string, min = 1): number {
  const raw = args[name];
  const value = Number(raw);
  if (typeof raw !== 'string' || !/^\d+$/.test(raw) || value < min) throw new UsageError(`--${name} must be a whole number of at least ${min} (got ${String(raw)})`);
  return value;
}

/** A mistake on the command line: printed as one line, exit 2. */
export class UsageError extends Error {}
