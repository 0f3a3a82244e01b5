// What rendering the welcome email from templates costs per email, against the renderer it
// replaced (the email written as template literals in code) and against Handlebars, the
// template engine it could have used, on the same template files (their `{{field}}` syntax is
// also Handlebars'). For scale, it also times composing the MIME message of one email with
// nodemailer, which every send does anyway. Single-threaded, in-process, no I/O.
//
//   npm run build && node dist/bench/render-welcome.js
//   npm install --no-save handlebars && node dist/bench/render-welcome.js   # with Handlebars
//   MAIL_TEMPLATES_DIR=path/to/copy node dist/bench/render-welcome.js        # other templates
//
// Each variant renders BENCH_RENDERS emails (default 200000) per run after a warm-up; the
// figure is the median of BENCH_RUNS runs (default 3), in nanoseconds per email.
import MailComposer from 'nodemailer/lib/mail-composer/index.js';
import type { WelcomeJob, WelcomeTemplates } from '../src/mail/contract.js';
import { loadWelcomeTemplates } from '../src/mail/templates.js';
import { ACTIVATION_TTL_MS } from '../src/tokens.js';
import { compileWelcome, describeDuration, escapeHtml, type RenderedWelcome } from '../workers/render-welcome.js';

const RENDERS = Number(process.env.BENCH_RENDERS ?? 200_000);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const COMPOSES = Math.max(1, Math.round(RENDERS / 100));

/** The renderer the templates replaced, kept here as the baseline. */
function literalRenderer(job: WelcomeJob): RenderedWelcome {
  const activation = `{"token": "${job.token}"}`;
  const text = [
    `Hi ${job.name},`, '', 'Thanks for signing up for a Mailoffload account.', 'We are excited to have you on board!', '',
    `For future reference, your user ID number is ${job.userId}.`, '',
    'Please send a request to the `PUT /v1/users/activated` endpoint', 'with the following JSON body to activate your account:', '',
    activation, '', 'Please note that this is a one-time use token and it will expire in 3 days.', '', 'Thanks,', '', 'The Mailoffload Team', '',
  ].join('\n');
  const html = `<!doctype html>
<html>
<head><meta name="viewport" content="width=device-width" /><meta http-equiv="Content-Type" content="text/html; charset=UTF-8" /></head>
<body>
<p>Hi ${escapeHtml(job.name)},</p>
<p>Thanks for signing up for a Mailoffload account. We are excited to have you on board!</p>
<p>For future reference, your user ID number is ${job.userId}.</p>
<p>Please send a request to the <code>PUT /v1/users/activated</code> endpoint with the following JSON body to activate your account:</p>
<pre><code>${escapeHtml(activation)}</code></pre>
<p>Please note that this is a one-time use token and it will expire in 3 days.</p>
<p>Thanks,</p>
<p>The Mailoffload Team</p>
</body>
</html>
`;
  return { subject: 'Welcome to Mailoffload!', text, html };
}

interface HandlebarsLike {
  compile(source: string, options?: { noEscape?: boolean; strict?: boolean }): (context: object) => string;
}

async function handlebarsRenderer(templates: WelcomeTemplates): Promise<((job: WelcomeJob) => RenderedWelcome) | undefined> {
  let handlebars: HandlebarsLike;
  try {
    const name = 'handlebars';
    handlebars = ((await import(name)) as { default: HandlebarsLike }).default;
  } catch {
    return undefined;
  }
  const subject = handlebars.compile(templates.subject.trimEnd(), { noEscape: true, strict: true });
  const text = handlebars.compile(templates.text, { noEscape: true, strict: true });
  const html = handlebars.compile(templates.html, { strict: true });
  const expiresIn = describeDuration(ACTIVATION_TTL_MS);
  return (job) => {
    const context = { ...job, expiresIn };
    // Handlebars leaves line breaks in a value alone: the subject still needs our header rule.
    return { subject: subject(context).replace(/[\x00-\x1f\x7f]+/g, ' '), text: text(context), html: html(context) };
  };
}

const jobs: WelcomeJob[] = Array.from({ length: 1024 }, (_, i) => ({
  outboxId: 1_000_000 + i,
  userId: 500_000 + i,
  name: i % 2 === 0 ? `Ada Lovelace ${i}` : `Eve <script>alert(${i})</script> & co`,
  email: `user-${i}@example.com`,
  token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',
}));

let sink = 0;
function timeRenders(render: (job: WelcomeJob) => RenderedWelcome, count: number): number {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) sink += render(jobs[i & 1023]!).html.length;
  return Number(process.hrtime.bigint() - started) / count;
}

async function timeComposes(render: (job: WelcomeJob) => RenderedWelcome, count: number): Promise<number> {
  const started = process.hrtime.bigint();
  for (let i = 0; i < count; i++) {
    const job = jobs[i & 1023]!;
    const { subject, text, html } = render(job);
    const message = new MailComposer({ from: 'Mailoffload <no-reply@bench.test>', to: { name: '', address: job.email }, subject, text, html, messageId: `<welcome-${job.outboxId}@bench.test>` });
    sink += (await message.compile().build()).length;
  }
  return Number(process.hrtime.bigint() - started) / count;
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

// The service's templates, or MAIL_TEMPLATES_DIR's as in the service.
const templates = loadWelcomeTemplates(process.env.MAIL_TEMPLATES_DIR);
const variants: [string, (job: WelcomeJob) => RenderedWelcome][] = [
  ['literal', literalRenderer],
  ['templates', compileWelcome(templates)],
];
const handlebars = await handlebarsRenderer(templates);
if (handlebars) variants.push(['handlebars', handlebars]);
else console.error('handlebars is not installed: `npm install --no-save handlebars` to include it');

const results: Record<string, number> = {};
for (const [name, render] of variants) {
  timeRenders(render, Math.min(RENDERS, 20_000));
  const runs = Array.from({ length: RUNS }, () => timeRenders(render, RENDERS));
  results[name] = median(runs);
  console.error(`${name.padEnd(10)} ${runs.map((ns) => `${ns.toFixed(0)} ns`).join(', ')} per email (median ${results[name]!.toFixed(0)} ns)`);
}
await timeComposes(variants[1]![1], Math.min(COMPOSES, 200));
const composeRuns: number[] = [];
for (let run = 0; run < RUNS; run++) composeRuns.push(await timeComposes(variants[1]![1], COMPOSES));
results.compose = median(composeRuns);
console.error(`${'compose'.padEnd(10)} ${composeRuns.map((ns) => `${(ns / 1000).toFixed(1)} us`).join(', ')} per email: templates + MIME build (median ${(results.compose / 1000).toFixed(1)} us)`);
if (sink === 0) throw new Error('nothing rendered');

console.log(Object.entries(results).map(([name, ns]) => `${name}_ns=${ns.toFixed(0)}`).join(' ') + ` renders=${RENDERS} runs=${RUNS}`);
