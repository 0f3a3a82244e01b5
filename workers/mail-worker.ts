// The Piscina entry: one batch sender (one pooled SMTP transporter) per thread, built once
// from workerData, never from env, and closed when the thread ends.
import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';
import type { MailResult, MailTask, WorkerSettings } from '../src/mail/contract.js';
import { announceThreadLoaded } from '../src/thread-loading.js';
import { createBatchSender } from './send-batch.js';

const settings = workerData as WorkerSettings;

// Composing and DKIM-signing mail is CPU work that can wait a few milliseconds; a signup
// cannot. On Linux the nice value is per thread (setpriority on the calling thread), so this
// lowers the priority of this worker only: when cores are scarce the API thread runs first
// and the workers take the rest. Elsewhere it would renice the whole process, so it is skipped.
if (process.platform === 'linux' && settings.nice) {
  try {
    setPriority(settings.nice);
  } catch {
    // Not permitted in this sandbox: run at normal priority.
  }
}

const sender = createBatchSender(settings);

process.once('exit', () => sender.close());

// Last: from here on the thread may be terminated safely (see thread-loading.ts).
announceThreadLoaded();

export default function mailWorker(task: MailTask): Promise<MailResult[]> {
  return sender.send(task);
}
