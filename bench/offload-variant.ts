// The comparison handlers of `npm run bench -- offload`, run as a child process like the real
// service (it migrates its database at boot, as the service does):
//   VARIANT=await   (b) `await sendMail` on the API thread before replying 202
//   VARIANT=fire    (c) sendMail on the API thread, not awaited and not tracked
// Same request schema, validation, password hash, signup transaction (src/db/signups.ts),
// renderer (workers/render-welcome.ts) and transporter options as the service's workers, so
// the only difference is where and how the email is sent. Never used by the service.
import { randomUUID } from 'node:crypto';
import closeWithGrace from 'close-with-grace';
import Fastify from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import nodemailer from 'nodemailer';
import { runMigrations } from '../src/db/migrations.js';
import { createPool } from '../src/db/pool.js';
import { insertSignup } from '../src/db/signups.js';
import { createLogger } from '../src/logger.js';
import { Metrics } from '../src/metrics.js';
import { PasswordHasher } from '../src/passwords.js';
import { SignupBody, UserResponse } from '../src/routes/schemas.js';
import { ACTIVATION_TTL_MS, generateToken } from '../src/tokens.js';
import { welcomeMessageId } from '../src/mail/message-id.js';
import { loadWelcomeTemplates } from '../src/mail/templates.js';
import { compileWelcome } from '../workers/render-welcome.js';

const env = process.env;
const variant = env.VARIANT;
if (variant !== 'await' && variant !== 'fire') throw new Error('VARIANT must be await or fire');
const log = createLogger(env.LOG_LEVEL ?? 'info');
const passwords = new PasswordHasher({ memoryKib: Number(env.ARGON2_MEMORY_KIB ?? 19456), iterations: Number(env.ARGON2_ITERATIONS ?? 2) }, log);
const from = env.MAIL_FROM ?? 'Mailoffload <no-reply@mailoffload.test>';
const fromAddress = /<([^>]+)>/.exec(from)?.[1] ?? from;
const domain = env.DKIM_DOMAIN ?? fromAddress.split('@')[1]!;
const renderWelcome = compileWelcome(loadWelcomeTemplates(env.MAIL_TEMPLATES_DIR));

const transporter = nodemailer.createTransport({
  url: env.SMTP_URL!,
  pool: true,
  // The service's total: MAIL_WORKERS x MAIL_SMTP_CONNECTIONS pooled connections.
  maxConnections: Number(env.SMTP_CONNECTIONS ?? 10),
  maxMessages: Number.POSITIVE_INFINITY,
  maxRequeues: 0,
  ...(env.DKIM_PRIVATE_KEY ? { dkim: { domainName: domain, keySelector: env.DKIM_SELECTOR!, privateKey: env.DKIM_PRIVATE_KEY.replace(/\\n/g, '\n') } } : {}),
});

await runMigrations(env.DATABASE_URL!, log);
// The service's pool size (DATABASE_POOL_MAX, 6 by default), so the handlers differ only in where the email is sent.
const db = createPool(env.DATABASE_URL!, log, 10_000, Number(env.DATABASE_POOL_MAX ?? 6));
const metrics = new Metrics({ defaultMetrics: true });
const app = Fastify({ loggerInstance: log, disableRequestLogging: true, genReqId: () => randomUUID() }).withTypeProvider<TypeBoxTypeProvider>();

app.post('/v1/users', { schema: { body: SignupBody, response: { 202: UserResponse } } }, async (request, reply) => {
  const stopTimer = metrics.signupDuration.startTimer();
  const { name, email, password } = request.body;
  const passwordHash = await passwords.hash(password!);
  const token = generateToken();
  const record = await insertSignup(db, { name: name!, email: email!, passwordHash, tokenHash: token.hash, tokenTtlMs: ACTIVATION_TTL_MS });
  const { subject, text, html } = renderWelcome({ outboxId: record.outboxId, userId: record.user.id, name: record.user.name, email: record.user.email, token: token.plaintext });
  const sending = transporter.sendMail({
    from,
    to: { name: '', address: record.user.email },
    subject,
    text,
    html,
    messageId: welcomeMessageId(record.outboxId, domain),
    envelope: { from: fromAddress, to: [record.user.email] },
    disableFileAccess: true,
    disableUrlAccess: true,
  });
  if (variant === 'await') {
    await sending;
    metrics.emailsSent.inc();
  } else {
    // Fire and forget: nothing tracks it, nothing waits for it at shutdown.
    sending.then(() => metrics.emailsSent.inc(), (err: unknown) => log.warn({ err }, 'email failed'));
  }
  stopTimer();
  return reply.code(202).send({ user: record.user });
});
app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

closeWithGrace({ delay: 30_000, logger: false }, async ({ signal }) => {
  log.info({ signal: signal ?? null }, 'shutting down server');
  const started = Date.now();
  await app.close();
  await passwords.close(Date.now());
  metrics.close();
  transporter.close();
  await db.end();
  log.info({ signal: signal ?? null, drainMs: Date.now() - started }, 'stopped server');
  log.flush();
});

const address = await app.listen({ port: Number(env.PORT ?? 0), host: '127.0.0.1' });
log.info({ address, variant }, 'starting server');
