// How the load test and the drill hand over their result: the --out JSON, and with --report the
// HTML page that embeds that very object. One source, two views.
import { accessSync, constants, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../test/support/env.js';
import { writeReport } from './html.js';
import type { ReportData } from './report-types.js';

/** The version of the service measured: the package.json beside the built dist/src/server.js. */
export function serviceVersion(): string {
  return (JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/** The highest non-null value of a series (0 when it has none). */
export function peakOf(values: readonly (number | null)[]): number {
  return values.reduce<number>((max, value) => (value === null ? max : Math.max(max, value)), 0);
}

/**
 * Checks --out and --report before a run, so that a typo does not cost the run: the report's
 * name ends in .html, and both go to a folder that exists and can be written. One line and
 * exit 2 otherwise, as for the tools' other bad arguments.
 */
export function checkOutputPaths(tool: string, { out, report }: { out: string; report: string | undefined }): void {
  const refuse = (message: string): never => {
    process.stderr.write(`${tool}: ${message}\n`);
    process.exit(2);
  };
  if (report !== undefined && !report.toLowerCase().endsWith('.html')) refuse(`--report takes a file name ending in .html, got "${report}"`);
  for (const [flag, file] of [['--out', out], ['--report', report]] as const) {
    if (file === undefined) continue;
    try {
      accessSync(path.dirname(path.resolve(file)), constants.W_OK);
    } catch {
      refuse(`${flag} ${file}: its folder does not exist or cannot be written`);
    }
  }
}

/** Writes the JSON to `out` and, when asked, the HTML report; says where, on stdout. */
export function writeOutputs(result: ReportData, { out, report }: { out: string; report: string | undefined }): void {
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`\nwrote ${out}\n`);
  if (report !== undefined) {
    writeReport(report, result);
    process.stdout.write(`wrote ${report} (open it in a browser; it needs no network)\n`);
  }
}
