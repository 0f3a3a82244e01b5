// Processes seen from outside: which ones still run on a folder (PostgreSQL is started with
// `-D <dir>`, so its postmaster's command line names its cluster), and process groups (a
// terminal runs `npm start`, its shell and node as one group). Linux /proc.
import { readFileSync, readdirSync } from 'node:fs';
import { waitUntil } from './wait.js';

/** Pids whose command line mentions `text`. */
export function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}

/**
 * Stops whatever still runs on `dir` (a cluster a failed test left running): SIGQUIT is
 * PostgreSQL's immediate shutdown, and its backends follow the postmaster. Resolves once none
 * is left.
 */
export async function stopProcessesMentioning(dir: string, timeoutMs = 20_000): Promise<void> {
  for (const pid of processesMentioning(dir)) {
    try {
      process.kill(pid, 'SIGQUIT');
    } catch {
      // gone already
    }
  }
  await waitUntil(() => processesMentioning(dir).length === 0, timeoutMs, () => `no process left on ${dir}`);
}

/** Sends `signal` to every process of the group led by `leader`; a group already gone is fine. */
export function signalGroup(leader: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-leader, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

/** Whether no process is left in the group led by `leader`. */
export function groupIsEmpty(leader: number): boolean {
  try {
    process.kill(-leader, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
