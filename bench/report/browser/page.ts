// The report page: reads the tool's result from the page (the same object as its --out JSON),
// draws the per-second series with uPlot (inlined before this script as the global `uPlot`),
// marks each instance's life on every chart, and prints the tool's own tables. What it drew is
// exposed as `window.report`, for the browser test and for anyone poking at the page.
import type { DrawnChart, MarkerKind, ReportData, ReportPage, Timeline } from '../report-types.js';

type Values = (number | null)[];

interface SeriesSpec {
  readonly label: string;
  readonly values: Values;
  readonly color: string;
}

interface ChartSpec {
  readonly id: string;
  readonly title: string;
  readonly unit: string;
  readonly series: SeriesSpec[];
  /** Draw the marker labels on this chart (the first one), the lines on every chart. */
  readonly labels?: boolean;
}

declare global {
  interface Window {
    report: ReportPage;
  }
}

const MARKER_COLORS: Record<MarkerKind, string> = {
  ready: '#2e7d32',
  signal: '#c62828',
  completing: '#ef6c00',
  deadline: '#6a1b9a',
  exit: '#455a64',
};
const MARKER_NAMES: Record<MarkerKind, string> = {
  ready: 'instance ready',
  signal: 'signal sent',
  completing: 'completing background tasks',
  deadline: 'deadline: emails released to the outbox',
  exit: 'exit',
};
// Series colours stay clear of the marker colours above, so that each can be told apart (and
// found in the canvas by the browser test).
const INSTANCE_COLORS = ['#1e88e5', '#d81b60', '#00897b', '#5e35b1', '#6d4c41', '#c0ca33', '#3949ab', '#f06292', '#26a69a', '#8d6e63'];
const ACCEPTED_COLOR = '#1e88e5';
const DELIVERED_COLOR = '#7cb342';
const PENDING_COLOR = '#ffb300';
const SENDING_COLOR = '#00acc1';
const DRAIN_FILL = 'rgba(239, 108, 0, 0.16)';

const data = JSON.parse(document.getElementById('report-data')!.textContent!) as ReportData;
const timeline: Timeline = data.timeline;
const root = document.getElementById('report')!;

/** An element with text and attributes; children appended in order. */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

const fmt = (value: number, digits = 1) => value.toLocaleString('en-US', { maximumFractionDigits: digits });

function statusColor(key: string): string {
  if (key.startsWith('2')) return '#7cb342';
  if (key.startsWith('4')) return '#ffb300';
  if (key.startsWith('5')) return '#d81b60';
  return '#8d6e63'; // no answer: error:…
}

const instanceColor = (index: number) => INSTANCE_COLORS[index % INSTANCE_COLORS.length]!;

function chartSpecs(): ChartSpec[] {
  const statuses = Object.keys(timeline.requestsByStatus).sort();
  const specs: ChartSpec[] = [
    {
      id: 'flow',
      title: 'Signups accepted and emails delivered, per second',
      unit: '/s',
      labels: true,
      series: [
        { label: 'signups accepted (202)', values: timeline.accepted, color: ACCEPTED_COLOR },
        { label: `emails delivered (${timeline.deliveredSource})`, values: timeline.delivered, color: DELIVERED_COLOR },
      ],
    },
    {
      id: 'requests',
      title: 'Requests by status, per second',
      unit: '/s',
      series: statuses.map((key) => ({ label: key, values: timeline.requestsByStatus[key]!, color: statusColor(key) })),
    },
  ];
  if (timeline.servedBy) {
    const served = timeline.servedBy;
    specs.push({
      id: 'served-by',
      title: 'Which instance served the traffic: 202s per second by instance',
      unit: '/s',
      series: timeline.instances.map((instance, i) => ({ label: instance.name, values: served[instance.name] ?? timeline.t.map(() => 0), color: instanceColor(i) })),
    });
  }
  const perInstance = (pick: (i: Timeline['instances'][number]) => Values) =>
    timeline.instances.map((instance, i) => ({ label: instance.name, values: pick(instance), color: instanceColor(i) }));
  specs.push(
    {
      id: 'outbox',
      title: 'Outbox backlog (rows)',
      unit: '',
      series: [
        { label: 'pending', values: timeline.outboxPending, color: PENDING_COLOR },
        { label: 'sending', values: timeline.outboxSending, color: SENDING_COLOR },
      ],
    },
    { id: 'in-flight', title: 'Emails in flight in memory (mailoffload_emails_in_flight)', unit: '', series: perInstance((i) => i.inFlight) },
    { id: 'event-loop', title: 'API event-loop delay p99 (ms, per second)', unit: ' ms', series: perInstance((i) => i.eventLoopP99Ms) },
    { id: 'rss', title: 'Service RSS (MiB)', unit: ' MiB', series: perInstance((i) => i.rssMiB) },
  );
  return specs;
}

/** Draws the drains (shaded, with their duration) and the markers (vertical lines) over the plot. */
function overlay(u: uPlot, spec: ChartSpec, drawn: DrawnChart): void {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  const ratio = window.devicePixelRatio || 1;
  const x = (t: number) => u.valToPos(t, 'x', true);
  ctx.save();
  ctx.beginPath();
  ctx.rect(left, top, width, height);
  ctx.clip();
  ctx.font = `${11 * ratio}px system-ui, sans-serif`;
  ctx.textBaseline = 'top';
  ctx.textAlign = 'left'; // uPlot leaves the axes' alignment set
  /**
   * Text beside x (on its left near the right edge, so that it is not cut), in the first row
   * of its lane where it overlaps no text already drawn; left out when no row has room (the
   * events table below the charts lists everything).
   */
  const lanes = {
    top: { y: top + 2 * ratio, step: 13 * ratio, rows: [[], [], []] as { from: number; to: number }[][] },
    bottom: { y: top + height - 14 * ratio, step: -13 * ratio, rows: [[]] as { from: number; to: number }[][] },
  };
  const label = (text: string, at: number, lane: keyof typeof lanes) => {
    const w = ctx.measureText(text).width;
    const from = at + 3 * ratio + w > left + width ? at - 3 * ratio - w : at + 3 * ratio;
    const gap = 4 * ratio;
    const { y, step, rows } = lanes[lane];
    const row = rows.findIndex((taken) => taken.every((other) => from + w + gap < other.from || from > other.to + gap));
    if (row < 0) return;
    rows[row]!.push({ from, to: from + w });
    ctx.fillText(text, from, y + row * step);
  };
  drawn.drainsDrawn = 0;
  for (const drain of timeline.drains) {
    const from = x(drain.from);
    const to = Math.max(x(drain.to), from + 2 * ratio);
    ctx.fillStyle = DRAIN_FILL;
    ctx.fillRect(from, top, to - from, height);
    ctx.fillStyle = '#bf360c';
    label(`drain ${fmt(drain.durationMs / 1000, 2)} s`, to, 'bottom');
    drawn.drainsDrawn++;
  }
  drawn.markersDrawn = 0;
  for (const marker of timeline.markers) {
    const at = x(marker.t);
    ctx.strokeStyle = MARKER_COLORS[marker.kind];
    ctx.lineWidth = (marker.kind === 'signal' ? 2 : 1) * ratio;
    ctx.setLineDash(marker.kind === 'ready' || marker.kind === 'signal' ? [] : [4 * ratio, 3 * ratio]);
    ctx.beginPath();
    ctx.moveTo(at, top);
    ctx.lineTo(at, top + height);
    ctx.stroke();
    drawn.markersDrawn++;
    if (spec.labels && (marker.kind === 'signal' || marker.kind === 'ready')) {
      ctx.fillStyle = MARKER_COLORS[marker.kind];
      const text = marker.kind === 'signal' ? marker.label.replace(/ to /, ' → ') : `${marker.instance} ready`;
      label(text, at, 'top');
    }
  }
  ctx.restore();
}

function drawChart(spec: ChartSpec, width: number): DrawnChart {
  const container = el('section', { class: 'chart', id: `chart-${spec.id}`, 'data-chart': spec.id }, el('h2', {}, spec.title));
  root.append(container);
  const drawn: DrawnChart = { id: spec.id, title: spec.title, xPoints: 0, series: [], markersDrawn: 0, drainsDrawn: 0 };
  const options: uPlot.Options = {
    width,
    height: 210,
    // From second 0 (the first instance ready) to the last sample or event, whichever is later.
    scales: { x: { time: false, range: (_u, _min, max) => [0, Math.max(max, ...timeline.markers.map((m) => m.t))] } },
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    axes: [
      { label: 'seconds since start', values: (_u, ticks) => ticks.map((v) => `${v} s`) },
      { values: (_u, ticks) => ticks.map((v) => `${fmt(v, 2)}${spec.unit}`), size: 70 },
    ],
    series: [{ label: 'second', value: (_u, v) => (v === null ? '–' : `${fmt(v, 1)} s`) }, ...spec.series.map((s) => ({ label: s.label, stroke: s.color, width: 1.75, points: { show: false } }))],
    hooks: { draw: [(u: uPlot) => overlay(u, spec, drawn)] },
  };
  const plot = new uPlot(options, [timeline.t, ...spec.series.map((s) => s.values)] as uPlot.AlignedData, container);
  drawn.xPoints = plot.data[0]!.length;
  drawn.series = spec.series.map((s, i) => ({ label: s.label, color: s.color, points: plot.data[i + 1]!.length }));
  return drawn;
}

function table(title: string, rows: readonly (readonly [string, string])[], id: string): HTMLElement {
  return el(
    'section',
    { class: 'table', id },
    el('h2', {}, title),
    el('table', {}, ...rows.map(([key, value]) => el('tr', { 'data-key': key }, el('th', {}, key), el('td', {}, value)))),
  );
}

function headline(): HTMLElement {
  const figure = (key: string, label: string, value: number | null, good?: boolean) =>
    el('div', { class: `figure${good === undefined ? '' : good ? ' good' : ' bad'}`, 'data-figure': key }, el('span', { class: 'value' }, value === null ? 'unknown' : fmt(value, 0)), el('span', { class: 'label' }, label));
  return el(
    'div',
    { class: 'figures' },
    figure('accepted', 'signups accepted (202)', data.accepted),
    figure('delivered', 'emails delivered', data.delivered),
    figure('lost', 'lost', data.lost, data.lost === 0),
    figure('duplicates', 'duplicates', data.duplicates),
    ...(timeline.drains.length > 0
      ? [
          el(
            'div',
            { class: 'figure', 'data-figure': 'drains' },
            el('span', { class: 'value' }, `${fmt(Math.max(...timeline.drains.map((d) => d.durationMs)) / 1000, 2)} s`),
            el('span', { class: 'label' }, `longest of ${timeline.drains.length} drains (${timeline.drains.map((d) => `${fmt(d.durationMs / 1000, 2)} s`).join(', ')})`),
          ),
        ]
      : []),
  );
}

function configRows(): [string, string][] {
  const c = data.config;
  return [
    ['connections', String(c.connections)],
    ['load duration', `${fmt(c.durationS, 1)} s`],
    ['argon2id cost', c.argon2],
    ['SMTP latency', c.smtpLatencyMs === null ? 'an SMTP server of the user (SMTP_URL)' : `${c.smtpLatencyMs} ms (the tool's SMTP sink)`],
    ['mail workers per instance', c.workers === null ? 'unknown' : String(c.workers)],
    ...Object.entries(c.other).map(([key, value]): [string, string] => [key, String(value)]),
    ['service version', data.serviceVersion],
  ];
}

function events(): HTMLElement {
  const rows = timeline.markers.map((marker) =>
    el(
      'tr',
      { 'data-marker-kind': marker.kind, 'data-instance': marker.instance },
      el('td', {}, `${fmt(marker.t, 2)} s`),
      el('td', {}, el('span', { class: 'swatch', style: `background:${MARKER_COLORS[marker.kind]}` }), MARKER_NAMES[marker.kind]),
      el('td', {}, marker.label),
    ),
  );
  const drains = timeline.drains.map((drain) =>
    el('tr', { 'data-drain': drain.instance }, el('td', {}, `${fmt(drain.from, 2)}–${fmt(drain.to, 2)} s`), el('td', {}, el('span', { class: 'swatch', style: `background:${DRAIN_FILL}` }), 'drain'), el('td', {}, `${drain.instance}: ${fmt(drain.durationMs / 1000, 2)} s (drainMs ${drain.durationMs})`)),
  );
  return el('section', { class: 'table', id: 'events' }, el('h2', {}, 'Events'), el('table', {}, ...rows, ...drains));
}

function legend(): HTMLElement {
  const kinds = Object.keys(MARKER_COLORS) as MarkerKind[];
  return el(
    'p',
    { class: 'marker-legend' },
    ...kinds.map((kind) => el('span', {}, el('span', { class: 'swatch', style: `background:${MARKER_COLORS[kind]}` }), MARKER_NAMES[kind])),
    el('span', {}, el('span', { class: 'swatch', style: `background:${DRAIN_FILL}` }), 'drain (shutting down server → stopped server)'),
  );
}

root.append(
  el('h1', {}, data.title),
  el('p', { class: 'subtitle' }, `mailoffload ${data.serviceVersion} · npm run ${data.tool} · started ${timeline.startedAt} · ${timeline.t.length} samples, one a second`),
  headline(),
  legend(),
);
const width = Math.max(640, Math.min(1200, root.clientWidth));
const charts = chartSpecs().map((spec) => drawChart(spec, width));
root.append(
  el('div', { class: 'tables' }, table('Configuration', configRows(), 'config'), events()),
  ...data.tables.map((t, i) => table(t.title, t.rows, `summary-${i}`)),
  el('section', { class: 'table' }, el('h2', {}, 'Summary line'), el('pre', { id: 'summary-line' }, data.line)),
);
window.report = { data, charts, markers: timeline.markers, ready: true };
