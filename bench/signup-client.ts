// bench:mail's load generator for part 3, in its own process so that its CPU and its event
// loop are not the API thread's: COUNT signups (the kit's load generator) to TARGET_URL with
// CONCURRENCY requests at a time, each with a unique address. Reports the run's duration and
// latencies to the parent.
import { startSignupLoad, summarize } from '../test/support/load.js';
import { CleanupStack } from '../test/support/scope.js';

const cleanup = new CleanupStack();
const load = startSignupLoad(cleanup, {
  targets: [process.env.TARGET_URL!],
  count: Number(process.env.COUNT ?? 2000),
  concurrency: Number(process.env.CONCURRENCY ?? 32),
  requestTimeoutMs: 30_000,
  prefix: process.env.PREFIX ?? `load-${process.pid}`,
});
await load.done;
await cleanup.run();
const summary = summarize(load.outcomes);
process.send!({ durationMs: summary.durationMs, p50Ms: summary.latencyMs.p50, p99Ms: summary.latencyMs.p99, statuses: summary.byStatus }, () => process.exit(0));
