// CPU per email of the worker's batch sender vs variations, one thread, sink in a child
import { fork } from 'node:child_process';
import { createBatchSender } from './dist/workers/send-batch.js';
import { loadWelcomeTemplates } from './dist/src/mail/templates.js';
const N = 3000;
const sink = fork('dist/test/support/smtp-sink-child.js', [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
const port = await new Promise((r) => sink.on('message', (m) => m.type === 'listening' && r(m.port)));
const settings = { smtpUrl: `smtp://127.0.0.1:${port}`, from: 'Mailoffload <no-reply@mailoffload.test>', messageIdDomain: 'mailoffload.test', smtpConnections: 5, sendTimeoutMs: 30000, tlsRejectUnauthorized: true, welcomeTemplates: loadWelcomeTemplates(undefined), handBack: new SharedArrayBuffer(4) };
const sender = createBatchSender(settings);
const jobs = (off) => Array.from({ length: N }, (_, i) => ({ outboxId: off + i, userId: off + i, name: 'Bench User', email: `b${off + i}@example.com`, token: 'ABCDEFGHIJKLMNOPQRSTUVWXYZ' }));
const measure = async (label, batch, off) => { const c = process.cpuUsage(); const t = performance.now(); const all = jobs(off); for (let i = 0; i < all.length; i += batch) await sender.send(all.slice(i, i + batch)); const u = process.cpuUsage(c); console.log(label, 'cpu ms/email', ((u.user + u.system) / 1000 / N).toFixed(3), 'user', (u.user/1000/N).toFixed(3), 'sys', (u.system/1000/N).toFixed(3), 'emails/s', (N / ((performance.now() - t) / 1000)).toFixed(0)); };
await measure('warm', 10, 0);
await measure('batch 10', 10, 10000);
await measure('batch 1 ', 1, 20000);
await measure('batch 10', 10, 30000);
sender.close(); sink.disconnect(); sink.kill();
