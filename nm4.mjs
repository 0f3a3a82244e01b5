import nodemailer from 'nodemailer';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadWelcomeTemplates } from './dist/src/mail/templates.js';
import { compileWelcome } from './dist/workers/render-welcome.js';
const N = 3000;
const render = compileWelcome(loadWelcomeTemplates(undefined));
const sink = fork('dist/test/support/smtp-sink-child.js', [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
const port = await new Promise((r) => sink.on('message', (m) => m.type === 'listening' && r(m.port)));
const t = nodemailer.createTransport({ url: `smtp://127.0.0.1:${port}`, pool: true, maxConnections: 5, maxMessages: Infinity, maxRequeues: 0, connectionTimeout: 30000, greetingTimeout: 30000, socketTimeout: 30000, dnsTimeout: 30000, tls: { rejectUnauthorized: true }, requireTLS: false });
const base = randomBytes(12).toString('hex');
const variants = {
  current: (j, r) => ({ from: 'Mailoffload <no-reply@mailoffload.test>', to: { name: '', address: j.email }, subject: r.subject, text: r.text, html: r.html, messageId: `<${j.outboxId}.welcome@mailoffload.test>`, envelope: { from: 'no-reply@mailoffload.test', to: [j.email] }, disableFileAccess: true, disableUrlAccess: true }),
  fromObj: (j, r) => ({ ...variants.current(j, r), from: { name: 'Mailoffload', address: 'no-reply@mailoffload.test' } }),
  fromObjBoundaryQP: (j, r) => ({ ...variants.current(j, r), from: { name: 'Mailoffload', address: 'no-reply@mailoffload.test' }, baseBoundary: base, textEncoding: 'quoted-printable' }),
};
let off = 0;
const run = async (mk) => { const jobs = Array.from({ length: N }, (_, i) => ({ outboxId: off + i, userId: off + i, name: 'B', email: `b${off + i}@example.com`, token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' })); off += N; let i = 0; await Promise.all(Array.from({ length: 5 }, async () => { while (i < N) { const j = jobs[i++]; await t.sendMail(mk(j, render(j))); } })); };
const results = {};
for (let round = 0; round < 3; round++) for (const [name, mk] of Object.entries(variants)) { await run(mk); const c = process.cpuUsage(); await run(mk); const u = process.cpuUsage(c); (results[name] ??= []).push((u.user + u.system) / 1000 / N); }
if (process.env.STL0) console.log('stackTraceLimit', Error.stackTraceLimit);
for (const [k, v] of Object.entries(results)) console.log(k.padEnd(20), v.map((x) => x.toFixed(3)).join(' '), 'median', v.sort()[1].toFixed(3));
t.close(); sink.disconnect(); sink.kill();
