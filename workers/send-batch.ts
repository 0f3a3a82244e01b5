// A thin adapter from a batch of jobs to nodemailer: one pooled SMTP transporter, built once
// from the settings, shared by every batch (the work is mostly waiting on sockets). Results are
// returned as values, never thrown: custom error fields do not survive the trip between
// threads. The Piscina entry (mail-worker.ts) builds one per thread; the benchmark also
// builds one on the main thread to measure what the pool saves the API thread.
import nodemailer from 'nodemailer';
import pLimit from 'p-limit';
import type { MailResult, MailTask, WelcomeJob, WorkerSettings } from '../src/mail/contract.js';
import { isValidEmail } from '../src/validation.js';
import { classifySendError, invalidRecipient } from './classify-error.js';
import { welcomeMessageId } from '../src/mail/message-id.js';
import { compileWelcome } from './render-welcome.js';

export interface BatchSender {
  send(task: MailTask): Promise<MailResult[]>;
  close(): void;
}

/** One pooled SMTP transporter per thread: every option carries its why. */
function createTransport(settings: WorkerSettings) {
  return nodemailer.createTransport({
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
    tls: { rejectUnauthorized: settings.tlsRejectUnauthorized, ...(settings.tlsCa ? { ca: settings.tlsCa } : {}) },
    // Plain smtp:// to a non-loopback host: no STARTTLS, no send (and no AUTH in clear).
    requireTLS: settings.requireTls ?? false,
    ...(settings.dkim ? { dkim: settings.dkim } : {}),
  });
}

export function createBatchSender(settings: WorkerSettings): BatchSender {
  // Once per thread: rendering an email is then a join of precompiled pieces.
  const renderWelcome = compileWelcome(settings.welcomeTemplates);
  const transporter = createTransport(settings);
  // At most one message per pooled connection is handed to nodemailer, so none waits in its
  // internal queue: a job either is on an SMTP connection or is still ours to hand back when
  // shutdown begins. (Piscina gives this thread several tasks at once.)
  const onConnection = pLimit(settings.smtpConnections);
  const handBack = new Int32Array(settings.handBack);

  async function sendOne(job: WelcomeJob): Promise<MailResult> {
    // The API validated the address, but a row can reach us by other paths (the sweeper, a
    // hand-edited outbox): check again, and fail for good, since it will never become valid.
    if (!isValidEmail(job.email)) {
      return { outboxId: job.outboxId, status: 'failed', ...invalidRecipient() };
    }
    const { subject, text, html } = renderWelcome(job);
    const messageId = welcomeMessageId(job.outboxId, settings.messageIdDomain);
    try {
      await transporter.sendMail({
        from: settings.from,
        // The address alone, as an object so nodemailer does not parse it: the name is the
        // signup's, and anyone can sign up anyone's address, so a display name here would
        // show a stranger's words to the recipient (the templates leave it out for the same
        // reason).
        to: { name: '', address: job.email },
        subject,
        text,
        html,
        messageId,
        // Exactly one recipient, whatever the headers say.
        envelope: { from: addressOf(settings.from), to: [job.email] },
        disableFileAccess: true,
        disableUrlAccess: true,
      });
      return { outboxId: job.outboxId, status: 'sent' };
    } catch (error) {
      return { outboxId: job.outboxId, status: 'failed', ...classifySendError(error) };
    }
  }

  /**
   * Sends `job` on a free connection. One that arrives to find a connection free is in
   * progress and is sent whatever happens; one that has to wait behind others is handed back
   * unsent if shutdown begins while it waits.
   */
  function sendWhenConnected(job: WelcomeJob): Promise<MailResult> {
    const mustWait = onConnection.activeCount + onConnection.pendingCount >= settings.smtpConnections;
    return onConnection(() => (mustWait && Atomics.load(handBack, 0) === 1 ? { outboxId: job.outboxId, status: 'released' as const } : sendOne(job)));
  }

  return {
    send: (task) => Promise.all(task.map(sendWhenConnected)),
    close: () => transporter.close(),
  };
}

function addressOf(from: string): string {
  return /<([^>]+)>\s*$/.exec(from)?.[1] ?? from.trim();
}
