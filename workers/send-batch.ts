// The Piscina entry: a thin adapter from a batch of jobs to nodemailer. One pooled SMTP
// transporter per thread, built once from workerData (never from env), shared by every task
// this thread runs at once (concurrentTasksPerWorker > 1: the work is mostly waiting on
// sockets). Results are returned as values, never thrown: custom error fields do not survive
// the trip between threads.
import { workerData } from 'node:worker_threads';
import nodemailer from 'nodemailer';
import type { MailResult, MailTask, WelcomeJob, WorkerSettings } from '../src/mail/contract.js';
import { classifySendError } from './classify-error.js';
import { renderWelcome, welcomeMessageId } from './render-welcome.js';

const settings = workerData as WorkerSettings;

const transporter = nodemailer.createTransport({
  url: settings.smtpUrl,
  pool: true,
  maxConnections: settings.smtpConnections,
  // Keep connections open: reconnecting every 100 messages costs a handshake (and a 100 ms
  // greeting delay on some servers) for nothing.
  maxMessages: Number.POSITIVE_INFINITY,
  // The outbox already retries; the pool's own re-queue after a dropped connection would only
  // add a second, untracked copy of the message.
  maxRequeues: 0,
  // Time-box every send with nodemailer's own timeouts: aborting a Piscina task kills its thread.
  connectionTimeout: settings.sendTimeoutMs,
  greetingTimeout: settings.sendTimeoutMs,
  socketTimeout: settings.sendTimeoutMs,
  dnsTimeout: settings.sendTimeoutMs,
  tls: { rejectUnauthorized: settings.tlsRejectUnauthorized },
  ...(settings.dkim ? { dkim: settings.dkim } : {}),
});

process.once('exit', () => transporter.close());

async function sendOne(job: WelcomeJob): Promise<MailResult> {
  const { subject, text, html } = renderWelcome(job);
  const messageId = welcomeMessageId(job.outboxId, settings.messageIdDomain);
  try {
    const info = await transporter.sendMail({
      from: settings.from,
      // An address object, not a string: nodemailer encodes the display name, so CR/LF or a
      // comma in it cannot add a header or a second recipient.
      to: { name: job.name, address: job.email },
      subject,
      text,
      html,
      messageId,
      // Exactly one recipient, whatever the headers say.
      envelope: { from: addressOf(settings.from), to: [job.email] },
      disableFileAccess: true,
      disableUrlAccess: true,
    });
    return { outboxId: job.outboxId, status: 'sent', messageId, response: String(info.response ?? '') };
  } catch (error) {
    return { outboxId: job.outboxId, status: 'failed', ...classifySendError(error) };
  }
}

function addressOf(from: string): string {
  return /<([^>]+)>\s*$/.exec(from)?.[1] ?? from.trim();
}

export default function sendBatch(task: MailTask): Promise<MailResult[]> {
  return Promise.all(task.map(sendOne));
}
