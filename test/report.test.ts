// The HTML report of a real redeploy drill, opened in a real browser: a short drill (two cycles,
// a few seconds of signups) writes its JSON and its report, then headless Chromium (Debian's
// package, driven by puppeteer-core) loads the file and the page is checked against the JSON:
// no console error, no request beyond the file itself, every chart drawn with one point per
// second, every signal and drain marked, and the same accepted/delivered/lost.
// REPORT_SCREENSHOT=docs/drill-report.png also saves a picture of the page (the README's).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { pathToFileURL } from 'node:url';
import puppeteer, { type Browser } from 'puppeteer-core';
import type { ReportData, ReportPage } from '../bench/report/report-types.js';
import { closeAtEnd, createTestDatabase, file, projectRoot, tempDir, track } from './support/index.js';

const CHROMIUM = '/usr/bin/chromium';

// The page's globals, as far as the functions run in it read them (this file is compiled
// without the DOM's types: it is Node code, apart from those functions).
declare const window: { report: ReportPage | undefined };
declare const document: {
  querySelector(selector: string): { width: number; height: number; getContext(kind: '2d'): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } } | null;
};

/** The drill's JSON as far as this test reads it beyond the report's fields. */
type DrillResult = ReportData & {
  readonly emailsWithout202: number;
  readonly instances: { name: string; served: number; signal: string | null; exit: string | null; drainMs: number | null }[];
};

/** Runs `npm run drill`'s script with `args` to its end; the child is killed if the scope ends first. */
async function runDrill(databaseUrl: string, args: string[]): Promise<{ code: number | null; output: string }> {
  const child = spawn(process.execPath, [path.join(projectRoot, 'dist/bench/drill.js'), ...args], {
    cwd: projectRoot,
    env: { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: databaseUrl },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  const untrack = track({ kind: 'drill', label: `pid ${child.pid}`, forceClose: () => child.kill('SIGKILL') });
  closeAtEnd(file, async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    await exited;
    untrack();
  });
  return { code: await exited, output };
}

/** Headless Chromium with the flags a CI box needs and a profile of its own, closed at the end of the file. */
async function launchBrowser(): Promise<Browser> {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium; .ci/run does it)`);
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    // Exactly these flags: no sandbox as root, and nothing that reaches the network on its own.
    ignoreDefaultArgs: true,
    pipe: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${tempDir(file, 'chromium-profile', 0o700)}`,
    ],
  });
  const untrack = track({ kind: 'browser', label: 'chromium', forceClose: () => browser.close() });
  closeAtEnd(file, async () => {
    await browser.close();
    untrack();
  });
  return browser;
}

const sum = (values: readonly (number | null)[]) => values.reduce<number>((total, v) => total + (v ?? 0), 0);

test('a drill report opened in headless Chromium shows the series, the markers and the figures of its JSON', { timeout: 240_000 }, async (t) => {
  const database = await createTestDatabase(t);
  const dir = tempDir(t, 'report');
  const jsonPath = path.join(dir, 'drill.json');
  const htmlPath = path.join(dir, 'drill.html');
  const { code, output } = await runDrill(database.url, [
    '--cycles', '2', '--interval', '1', '--connections', '4',
    '--argon2-memory-kib', '64', '--argon2-iterations', '1', '--drain-timeout', '60',
    '--out', jsonPath, '--report', htmlPath,
  ]);
  assert.equal(code, 0, `the drill failed:\n${output.slice(-3000)}`);
  const json = JSON.parse(readFileSync(jsonPath, 'utf8')) as DrillResult;
  const timeline = json.timeline;
  assert.ok(json.accepted > 0, 'the drill accepted signups');
  assert.equal(json.lost, 0);

  // The series themselves: one sample a second from the first instance ready to the last exit,
  // and counts that add up to the run's totals.
  const n = timeline.t.length;
  assert.ok(n >= 3, `${n} samples`);
  timeline.t.slice(0, -1).forEach((at, i) => assert.ok(Math.abs(at - i) < 0.5, `sample ${i} at ${at} s, not about ${i} s`));
  const lastExit = Math.max(...timeline.markers.filter((m) => m.kind === 'exit').map((m) => m.t));
  assert.ok(timeline.t.at(-1)! >= lastExit - 0.01, 'the samples reach the last exit');
  assert.equal(sum(timeline.accepted), json.accepted, 'every 202 is in one second');
  assert.equal(sum(timeline.requestsByStatus['202'] ?? []), json.accepted);
  for (const instance of json.instances) assert.equal(sum(timeline.servedBy![instance.name] ?? []), instance.served, `202s served by ${instance.name}`);
  assert.equal(sum(timeline.delivered), json.delivered + json.duplicates! + json.emailsWithout202, 'every message the sink accepted is in one second');
  for (const instance of timeline.instances) {
    assert.ok(instance.rssMiB.some((v) => v !== null && v > 10), `RSS of ${instance.name}`);
    assert.ok(instance.inFlight.some((v) => v !== null), `emails in flight of ${instance.name}`);
  }
  assert.ok(timeline.instances.some((i) => i.eventLoopP99Ms.some((v) => v !== null)), 'event-loop delay p99');
  assert.ok(timeline.outboxPending.some((v) => v !== null) && timeline.outboxSending.some((v) => v !== null), 'outbox counts');

  // Markers: each instance ready, signalled (SIGTERM: two cycles, then the last one retired),
  // completing its background tasks, and exited; one drain each, as long as its log said.
  assert.equal(json.instances.length, 3);
  for (const instance of json.instances) {
    const kinds = timeline.markers.filter((m) => m.instance === instance.name).map((m) => m.kind);
    for (const kind of ['ready', 'signal', 'completing', 'exit'] as const) assert.ok(kinds.includes(kind), `${kind} marker of ${instance.name}: ${kinds.join(',')}`);
    assert.equal(instance.signal, 'SIGTERM');
    const drain = timeline.drains.find((d) => d.instance === instance.name);
    assert.ok(drain, `drain of ${instance.name}`);
    assert.equal(drain.durationMs, instance.drainMs);
  }

  const browser = await launchBrowser();
  const page = await browser.newPage();
  const problems: string[] = [];
  const requests: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warn') problems.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error instanceof Error ? error.message : String(error)}`));
  page.on('requestfailed', (request) => problems.push(`request failed: ${request.url()}`));
  page.on('request', (request) => requests.push(request.url()));
  await page.setViewport({ width: 1280, height: 900 });
  const url = pathToFileURL(htmlPath).href;
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForFunction(() => window.report?.ready === true, { timeout: 15_000 });

  assert.deepEqual(problems, [], 'no console errors');
  assert.deepEqual(requests, [url], 'the page loads nothing but itself');

  const shown = await page.evaluate(() => ({ data: window.report!.data, charts: window.report!.charts }));
  assert.deepEqual(shown.data, json, 'the page embeds exactly the --out JSON');

  // Every chart, with one point per sample in every series, and every marker and drain drawn on it.
  const expectedCharts = { flow: 2, requests: Object.keys(timeline.requestsByStatus).length, 'served-by': 3, outbox: 2, 'in-flight': 3, 'event-loop': 3, rss: 3 };
  assert.deepEqual(Object.fromEntries(shown.charts.map((c) => [c.id, c.series.length])), expectedCharts);
  for (const chart of shown.charts) {
    assert.equal(chart.xPoints, n, `${chart.id}: x points`);
    for (const series of chart.series) assert.equal(series.points, n, `${chart.id} / ${series.label}: points`);
    assert.equal(chart.markersDrawn, timeline.markers.length, `${chart.id}: markers drawn`);
    assert.equal(chart.drainsDrawn, timeline.drains.length, `${chart.id}: drains drawn`);
  }

  // The canvases are not blank: pixels of each series' colour are there (the served-by chart:
  // every instance, since each one served traffic).
  const pixels = await page.evaluate(() =>
    window.report!.charts.map((chart) => {
      const canvas = document.querySelector(`[data-chart="${chart.id}"] canvas`)!;
      const { data } = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height);
      const rgb = (hex: string) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
      const colours = chart.series.map((s) => rgb(s.color));
      const bySeries = colours.map(() => 0);
      let painted = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i + 3]! < 200) continue;
        painted++;
        colours.forEach(([r, g, b], k) => {
          if (Math.abs(data[i]! - r!) < 24 && Math.abs(data[i + 1]! - g!) < 24 && Math.abs(data[i + 2]! - b!) < 24) bySeries[k]!++;
        });
      }
      return { id: chart.id, painted, bySeries: Object.fromEntries(chart.series.map((s, k) => [s.label, bySeries[k]!])) };
    }),
  );
  for (const chart of pixels) {
    assert.ok(chart.painted > 1000, `${chart.id}: ${chart.painted} painted pixels`);
    assert.ok(Math.max(...Object.values(chart.bySeries)) >= 30, `${chart.id}: series colours on the canvas ${JSON.stringify(chart.bySeries)}`);
  }
  const servedBy = pixels.find((c) => c.id === 'served-by')!;
  for (const [label, count] of Object.entries(servedBy.bySeries)) assert.ok(count >= 10, `served-by: ${label} drawn (${count} pixels)`);

  // The events table lists every marker, each signal with its instance, and the drains.
  const events = await page.$$eval('#events tr', (rows) => rows.map((row) => ({ kind: row.getAttribute('data-marker-kind'), instance: row.getAttribute('data-instance'), drain: row.getAttribute('data-drain') })));
  const signals = events.filter((e) => e.kind === 'signal').map((e) => e.instance).sort();
  assert.deepEqual(signals, json.instances.filter((i) => i.signal).map((i) => i.name).sort());
  assert.equal(events.filter((e) => e.kind !== null).length, timeline.markers.length);
  assert.deepEqual(events.filter((e) => e.drain !== null).map((e) => e.drain).sort(), json.instances.map((i) => i.name).sort());

  // The figures: the headline, the tool's own table and its key=value line say what the JSON says.
  const figure = (key: string) => page.$eval(`[data-figure="${key}"] .value`, (e) => e.textContent);
  const row = (key: string) => page.$eval(`tr[data-key="${key}"] td`, (e) => e.textContent);
  assert.equal(await figure('accepted'), json.accepted.toLocaleString('en-US'));
  assert.equal(await figure('delivered'), json.delivered.toLocaleString('en-US'));
  assert.equal(await figure('lost'), '0');
  assert.equal(await row('accepted (202)'), String(json.accepted));
  assert.equal(await row('delivered'), String(json.delivered));
  assert.equal(await row('lost'), String(json.lost));
  const line = await page.$eval('#summary-line', (e) => e.textContent!);
  assert.equal(line, json.line);
  assert.match(line, new RegExp(`accepted=${json.accepted} delivered=${json.delivered} lost=${json.lost} `));
  assert.ok(output.includes(line), 'the line the page shows is the one the drill printed');
  assert.equal(await row('service version'), JSON.parse(readFileSync(path.join(projectRoot, 'package.json'), 'utf8')).version);

  if (process.env.REPORT_SCREENSHOT) {
    await page.screenshot({ path: path.resolve(projectRoot, process.env.REPORT_SCREENSHOT) as `${string}.png`, fullPage: true });
  }
  await page.close();
});
