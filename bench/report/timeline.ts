// The story of a run, once a second: what the load generator got back, what the SMTP sink
// accepted, what each service instance's GET /metrics and /proc say, and the moments of each
// instance's life (ready, signalled, draining, exited). The load test and the drill put the
// result in their --out JSON as `timeline`; the HTML report draws it.
import { readFileSync } from 'node:fs';
import type { SignupOutcome } from '../../test/support/load.js';
import { histogramQuantile, scrape, type Scrape } from '../../test/support/prom.js';
import type { ServiceProcess } from '../../test/support/service.js';
import type { Drain, InstanceSeries, Marker, MarkerKind, Timeline } from './report-types.js';

/** What one instance gave at one tick. */
interface InstanceSample {
  inFlight?: number;
  eventLoopP99Ms?: number;
  rssBytes?: number;
}

interface Tick {
  readonly at: number;
  deliveredTotal?: number;
  pending?: number;
  sending?: number;
  readonly instances: Map<string, InstanceSample>;
}

interface Watched {
  readonly name: string;
  readonly url: string;
  readonly pid: number | undefined;
  scraping: boolean;
  alive: boolean;
  previous?: { tick: number; scrape: Scrape };
  sentTotal?: number;
}

export interface TimelineOptions {
  /** Total messages the SMTP sink accepted so far; without it, deliveries come from the services' metrics. */
  readonly deliveredTotal?: () => Promise<number>;
}

const SCRAPE_TIMEOUT_MS = 900;
const LOOP_DELAY = 'mailoffload_eventloop_delay_seconds';

function rssOf(pid: number): number | undefined {
  try {
    const kib = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return kib === undefined ? undefined : Number(kib) * 1024;
  } catch {
    return undefined; // the process is gone
  }
}

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;

export class TimelineRecorder {
  readonly startedAt = Date.now();
  readonly #ticks: Tick[] = [];
  readonly #watched = new Map<string, Watched>();
  readonly #markers: Marker[] = [];
  readonly #drains: Drain[] = [];
  readonly #pending = new Set<Promise<unknown>>();
  readonly #deliveredTotal: (() => Promise<number>) | undefined;
  #timer: NodeJS.Timeout | undefined;
  #stopped = false;

  constructor(options: TimelineOptions = {}) {
    this.#deliveredTotal = options.deliveredTotal;
    // The first tick, second 0, comes right after the caller's synchronous watch() and ready():
    // the state at the start (and the first scrape, from which the first event-loop window is
    // measured), so that every line starts at the first instance's readiness.
    this.#schedule();
  }

  /** Seconds since the start, to the millisecond. */
  seconds(at: number): number {
    return round((at - this.startedAt) / 1000, 3);
  }

  /** Starts reading an instance's metrics (and its RSS from /proc when `pid` is given). */
  watch(name: string, url: string, pid?: number): void {
    this.#watched.set(name, { name, url, pid, scraping: true, alive: true });
  }

  ready(name: string, at = Date.now()): void {
    this.#mark(at, name, 'ready', `${name} ready`);
  }

  /**
   * The tool signalled an instance. Its HTTP server closes at once, so its metrics are no
   * longer read (a scrape would only hold a connection open against its drain); /proc still is.
   */
  signalled(name: string, signal: NodeJS.Signals, at = Date.now()): void {
    const watched = this.#watched.get(name);
    if (watched) watched.scraping = false;
    this.#mark(at, name, 'signal', `${signal} to ${name}`);
  }

  /** An instance exited at `at`: its shutdown, as its own log lines tell it. */
  exited(name: string, service: ServiceProcess, exit: string, at = Date.now()): void {
    const watched = this.#watched.get(name);
    if (watched) {
      watched.scraping = false;
      watched.alive = false;
    }
    const line = (msg: string) => service.logs.find((entry) => entry.msg === msg && typeof entry.time === 'number') as (Record<string, unknown> & { time: number }) | undefined;
    const completing = line('completing background tasks');
    if (completing) this.#mark(completing.time, name, 'completing', `${name}: completing background tasks (pending ${String(completing.pending)})`);
    const deadline = line('shutdown deadline reached: unfinished emails released to the outbox');
    if (deadline) this.#mark(deadline.time, name, 'deadline', `${name}: deadline reached, ${String(deadline.released)} emails released to the outbox`);
    this.#mark(at, name, 'exit', `${name} exited (${exit})`);
    const shuttingDown = line('shutting down server');
    const stopped = line('stopped server');
    if (shuttingDown && stopped) {
      this.#drains.push({ instance: name, from: this.seconds(shuttingDown.time), to: this.seconds(stopped.time), durationMs: Number(stopped.drainMs) });
    }
  }

  /** Stops sampling (after one last tick) and returns the series; `instanceOf` names who answered a request. */
  async finish(outcomes: readonly SignupOutcome[], instanceOf?: (outcome: SignupOutcome) => string | undefined): Promise<Timeline> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#tick();
    await Promise.all(this.#pending);
    const ticks = this.#ticks;
    const t = ticks.map((tick) => this.seconds(tick.at));

    // Each answer falls in the interval in which it completed.
    const slot = (at: number) => {
      let lo = 0;
      let hi = ticks.length - 1;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (ticks[mid]!.at >= at) hi = mid;
        else lo = mid + 1;
      }
      return lo;
    };
    const zeros = () => new Array<number>(ticks.length).fill(0);
    const requestsByStatus: Record<string, number[]> = {};
    const accepted = zeros();
    const servedBy: Record<string, number[]> = {};
    for (const outcome of outcomes) {
      const i = slot(outcome.startedAt + outcome.elapsedMs);
      const key = outcome.status !== undefined ? String(outcome.status) : `error:${outcome.failure}`;
      (requestsByStatus[key] ??= zeros())[i]!++;
      if (outcome.status === 202) {
        accepted[i]!++;
        const instance = instanceOf?.(outcome);
        if (instance !== undefined) (servedBy[instance] ??= zeros())[i]!++;
      }
    }

    // Totals become per-interval increases; a tick without a total counts nothing, the next
    // one with a total counts since the last known.
    let lastTotal = 0;
    const delivered = ticks.map((tick) => {
      if (tick.deliveredTotal === undefined) return 0;
      const increase = tick.deliveredTotal - lastTotal;
      lastTotal = tick.deliveredTotal;
      return increase;
    });

    const instances = [...this.#watched.keys()].map((name): InstanceSeries => {
      const value = (pick: (sample: InstanceSample) => number | undefined, digits: number) =>
        ticks.map((tick) => {
          const sample = tick.instances.get(name);
          const v = sample ? pick(sample) : undefined;
          return v === undefined ? null : round(v, digits);
        });
      return {
        name,
        inFlight: value((s) => s.inFlight, 0),
        eventLoopP99Ms: value((s) => s.eventLoopP99Ms, 2),
        rssMiB: value((s) => (s.rssBytes === undefined ? undefined : s.rssBytes / 1024 / 1024), 1),
      };
    });

    return {
      startedAt: new Date(this.startedAt).toISOString(),
      t,
      requestsByStatus,
      accepted,
      delivered,
      deliveredSource: this.#deliveredTotal ? "the tool's SMTP sink" : 'mailoffload_emails_sent_total of the services',
      outboxPending: ticks.map((tick) => tick.pending ?? null),
      outboxSending: ticks.map((tick) => tick.sending ?? null),
      instances,
      servedBy: this.#watched.size > 1 ? servedBy : null,
      markers: [...this.#markers].sort((a, b) => a.t - b.t),
      drains: this.#drains,
    };
  }

  #mark(at: number, instance: string, kind: MarkerKind, label: string): void {
    this.#markers.push({ t: this.seconds(at), instance, kind, label });
  }

  /** Ticks on the second boundaries of the start, so a slow tick never shifts the next ones. */
  #schedule(): void {
    if (this.#stopped) return;
    const next = this.startedAt + this.#ticks.length * 1000;
    this.#timer = setTimeout(() => {
      void this.#tick();
      this.#schedule();
    }, Math.max(0, next - Date.now()));
  }

  /**
   * One sample. Counts (the sink's total) and /proc are read at once; scrapes are not waited
   * for before the next tick is scheduled, and fill in their own tick when they answer.
   */
  #tick(): Promise<void> {
    const index = this.#ticks.length;
    const tick: Tick = { at: Date.now(), instances: new Map() };
    this.#ticks.push(tick);
    const work: Promise<unknown>[] = [];
    if (this.#deliveredTotal) {
      work.push(this.#deliveredTotal().then((total) => (tick.deliveredTotal = total), () => undefined));
    }
    for (const watched of this.#watched.values()) {
      const sample: InstanceSample = {};
      if (watched.pid !== undefined && watched.alive) sample.rssBytes = rssOf(watched.pid);
      tick.instances.set(watched.name, sample);
      if (!watched.scraping) continue;
      // An instance that does not answer in time (closing, or busy beyond the timeout) simply
      // has no metrics at this tick.
      work.push(scrape(watched.url, SCRAPE_TIMEOUT_MS).then((metrics) => this.#read(index, tick, watched, sample, metrics), () => undefined));
    }
    const done = Promise.all(work).then(() => {
      // Without a sink, deliveries are the sum of the instances' sent counters, as last read
      // (an instance's sends after its last scrape, during its drain, are not seen).
      if (!this.#deliveredTotal) tick.deliveredTotal = [...this.#watched.values()].reduce((sum, w) => sum + (w.sentTotal ?? 0), 0);
    });
    this.#pending.add(done);
    void done.finally(() => this.#pending.delete(done));
    return done;
  }

  #read(index: number, tick: Tick, watched: Watched, sample: InstanceSample, metrics: Scrape): void {
    sample.inFlight = metrics.value('mailoffload_emails_in_flight');
    if (watched.pid === undefined) sample.rssBytes = metrics.value('process_resident_memory_bytes');
    // Outbox counts are of the shared database: any instance's will do.
    tick.pending ??= metrics.value('mailoffload_outbox_pending');
    tick.sending ??= metrics.value('mailoffload_outbox_sending');
    watched.sentTotal = metrics.value('mailoffload_emails_sent_total') ?? watched.sentTotal;
    // The histogram is cumulative: the window is from the previous scrape that answered.
    if (watched.previous && watched.previous.tick < index) {
      const p99 = histogramQuantile(LOOP_DELAY, 0.99, metrics, watched.previous.scrape);
      if (p99 !== undefined) sample.eventLoopP99Ms = p99 * 1000;
    }
    if (!watched.previous || watched.previous.tick < index) watched.previous = { tick: index, scrape: metrics };
  }
}
