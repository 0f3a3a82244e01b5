// The shape of the load test's and the drill's --out JSON as far as the HTML report reads it:
// the same object is written to the JSON file and embedded in the page. Types only, shared by
// the tools (Node) and the page script (the browser).

export type MarkerKind = 'ready' | 'signal' | 'completing' | 'deadline' | 'exit';

export interface Marker {
  /** Seconds since the timeline's start. */
  readonly t: number;
  readonly instance: string;
  readonly kind: MarkerKind;
  readonly label: string;
}

export interface Drain {
  readonly instance: string;
  /** `shutting down server` to `stopped server`, in seconds since the start. */
  readonly from: number;
  readonly to: number;
  /** The `drainMs` of the `stopped server` line. */
  readonly durationMs: number;
}

export interface InstanceSeries {
  readonly name: string;
  /** mailoffload_emails_in_flight; null while it cannot be scraped (not started, draining, gone). */
  readonly inFlight: (number | null)[];
  /** p99 of mailoffload_eventloop_delay_seconds between two consecutive scrapes, in ms. */
  readonly eventLoopP99Ms: (number | null)[];
  /** Resident memory, from /proc while the process lives (process_resident_memory_bytes for --url). */
  readonly rssMiB: (number | null)[];
}

export interface Timeline {
  /** When second 0 was (ISO 8601). */
  readonly startedAt: string;
  /** The end of each interval, in seconds since the start: 0 (the first instance ready), then about one second apart. */
  readonly t: number[];
  /** Answers that completed in each interval, by HTTP status ("202") or failure ("error:ECONNRESET"). */
  readonly requestsByStatus: Record<string, number[]>;
  /** 202s in each interval. */
  readonly accepted: number[];
  /** Messages the SMTP server accepted in each interval. */
  readonly delivered: number[];
  /** Where `delivered` is counted: the tool's SMTP sink, or the services' mailoffload_emails_sent_total. */
  readonly deliveredSource: string;
  readonly outboxPending: (number | null)[];
  readonly outboxSending: (number | null)[];
  readonly instances: InstanceSeries[];
  /** 202s in each interval by the instance that answered them (several instances only). */
  readonly servedBy: Record<string, number[]> | null;
  readonly markers: Marker[];
  readonly drains: Drain[];
}

/** One table as the tool prints it: a title and its rows of label and value. */
export interface ReportTable {
  readonly title: string;
  readonly rows: readonly (readonly [string, string])[];
}

/** What the report needs of a tool's result; each tool's JSON has more fields of its own. */
export interface ReportData {
  readonly tool: 'loadtest' | 'drill';
  /** The heading of the report: what was run. */
  readonly title: string;
  /** The version in package.json of the service that was measured. */
  readonly serviceVersion: string;
  readonly config: RunConfig;
  readonly accepted: number;
  readonly delivered: number;
  readonly lost: number;
  readonly duplicates: number | null;
  /** The tables the tool printed, in order. */
  readonly tables: readonly ReportTable[];
  /** The `key=value` line the tool printed last. */
  readonly line: string;
  readonly timeline: Timeline;
}

/** How the run was configured. */
export interface RunConfig {
  readonly connections: number;
  /** How long the load ran, in seconds. */
  readonly durationS: number;
  /** The argon2id cost, as the tool printed it. */
  readonly argon2: string;
  /** Delay of the tool's SMTP sink before each answer; null: an SMTP server of the user's (SMTP_URL). */
  readonly smtpLatencyMs: number | null;
  /** Mail worker threads per instance, from its `starting server` line (null: unknown, --url). */
  readonly workers: number | null;
  /** Anything else the tool was run with (cycles, signal, …). */
  readonly other: Readonly<Record<string, string | number | boolean | null>>;
}

/** What the page drew, per chart: the points of each series and the markers and drains drawn. */
export interface DrawnChart {
  readonly id: string;
  readonly title: string;
  xPoints: number;
  series: { readonly label: string; readonly color: string; readonly points: number }[];
  markersDrawn: number;
  drainsDrawn: number;
}

/** `window.report` on the page: for the browser test, and for anyone poking at the page. */
export interface ReportPage {
  readonly data: ReportData;
  readonly charts: DrawnChart[];
  readonly markers: Marker[];
  readonly ready: boolean;
}
