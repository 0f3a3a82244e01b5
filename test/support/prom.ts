// A small reader for the Prometheus text format, enough for the benchmarks and the metrics
// test: samples by name and labels, and quantiles from histogram buckets over a window.

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export class Scrape {
  readonly samples: Sample[] = [];
  readonly types = new Map<string, string>();

  constructor(readonly text: string) {
    for (const line of text.split('\n')) {
      if (line.startsWith('# TYPE ')) {
        const [, , name, type] = line.split(' ');
        if (name && type) this.types.set(name, type);
        continue;
      }
      if (line === '' || line.startsWith('#')) continue;
      const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!match) continue;
      const labels: Record<string, string> = {};
      for (const pair of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]!] = pair[2]!;
      this.samples.push({ name: match[1]!, labels, value: Number(match[3]) });
    }
  }

  has(name: string): boolean {
    return this.samples.some((sample) => sample.name === name);
  }

  /** The sum of the samples of `name` whose labels include `labels` (undefined when none). */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    const matching = this.samples.filter(
      (sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    );
    if (matching.length === 0) return undefined;
    return matching.reduce((sum, sample) => sum + sample.value, 0);
  }

  /** Cumulative bucket counts of a histogram, by upper bound. */
  buckets(name: string): Map<number, number> {
    const result = new Map<number, number>();
    for (const sample of this.samples) {
      if (sample.name !== `${name}_bucket`) continue;
      const le = sample.labels.le === '+Inf' ? Number.POSITIVE_INFINITY : Number(sample.labels.le);
      result.set(le, (result.get(le) ?? 0) + sample.value);
    }
    return result;
  }
}

export async function scrape(baseUrl: string, timeoutMs = 10_000): Promise<Scrape> {
  const response = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`GET ${baseUrl}/metrics answered ${response.status}`);
  return new Scrape(await response.text());
}

/**
 * The q-quantile of a histogram between two scrapes (before may be undefined: since start),
 * interpolated linearly inside its bucket as Prometheus' histogram_quantile does, leaving out
 * the `dropLargest` largest observations (ones known not to belong, such as a paused
 * process's late timers). Undefined when nothing was observed in the window.
 */
export function histogramQuantile(name: string, q: number, after: Scrape, before?: Scrape, dropLargest = 0): number | undefined {
  const end = after.buckets(name);
  const start = before?.buckets(name) ?? new Map<number, number>();
  const bounds = [...end.keys()].sort((a, b) => a - b);
  const cumulative = bounds.map((le) => (end.get(le) ?? 0) - (start.get(le) ?? 0));
  // Without the n largest observations, no bucket counts more than the total that is left.
  const total = Math.max(0, (cumulative.at(-1) ?? 0) - dropLargest);
  const counts = cumulative.map((count) => Math.min(count, total));
  if (total <= 0) return undefined;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (let i = 0; i < bounds.length; i++) {
    const le = bounds[i]!;
    const count = counts[i]!;
    if (count >= rank) {
      // Above the highest finite bucket: report that bucket's bound, as Prometheus does.
      if (le === Number.POSITIVE_INFINITY) return lowerBound;
      if (count === lowerCount) return le;
      return lowerBound + ((le - lowerBound) * (rank - lowerCount)) / (count - lowerCount);
    }
    lowerBound = le;
    lowerCount = count;
  }
  return lowerBound;
}

/** The upper bound of the highest histogram bucket that gained observations in the window. */
export function maxObserved(name: string, after: Scrape, before: Scrape): number | undefined {
  const end = after.buckets(name);
  const start = before.buckets(name);
  let previous = 0;
  let max: number | undefined;
  for (const le of [...end.keys()].sort((a, b) => a - b)) {
    const count = (end.get(le) ?? 0) - (start.get(le) ?? 0);
    if (count > previous) max = le;
    previous = count;
  }
  return max;
}
