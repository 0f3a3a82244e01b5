// The Piscina entry: one batch sender (one pooled SMTP transporter) per thread, built once
// from workerData, never from env, and closed when the thread ends.
import { workerData } from 'node:worker_threads';
import type { MailResult, MailTask, WorkerSettings } from '../src/mail/contract.js';
import { announceThreadLoaded } from '../src/thread-loading.js';
import { createBatchSender } from './send-batch.js';
import { setThisThreadNice } from './this-thread.js';

const settings = workerData as WorkerSettings;

// Composing and DKIM-signing mail is CPU work that can wait a few milliseconds; a signup
// cannot: when cores are scarce the API thread runs first and the workers take the rest.
// (0 or unset: left at the process's priority.)
if (settings.nice) setThisThreadNice(settings.nice);

const sender = createBatchSender(settings);

process.once('exit', () => sender.close());

// Last: from here on the thread may be terminated safely (see thread-loading.ts).
announceThreadLoaded();

export default function mailWorker(task: MailTask): Promise<MailResult[]> {
  return sender.send(task);
}
