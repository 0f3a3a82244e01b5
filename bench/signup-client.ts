// bench:mail's load generator for part 3, in its own process so that its CPU and its event
// loop are not the API thread's: COUNT signups over real HTTP with CONCURRENCY requests at a
// time (keep-alive), each with a unique address. Reports the run's duration and latencies.
const url = process.env.TARGET_URL!;
const count = Number(process.env.COUNT ?? 2000);
const concurrency = Number(process.env.CONCURRENCY ?? 32);
const prefix = process.env.PREFIX ?? `load-${process.pid}`;

const latencies: number[] = [];
const statuses = new Map<number, number>();
let next = 0;

async function client(): Promise<void> {
  while (next < count) {
    const i = next++;
    const started = performance.now();
    const response = await fetch(`${url}/v1/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: `Load User ${i}`, email: `${prefix}-${i}@example.com`, password: 'pa55word1234' }),
    });
    await response.arrayBuffer();
    latencies.push(performance.now() - started);
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1);
  }
}

const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, client));
const durationMs = performance.now() - started;
latencies.sort((a, b) => a - b);
const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!;
process.send!({ durationMs, p50Ms: at(0.5), p99Ms: at(0.99), statuses: Object.fromEntries(statuses) }, () => process.exit(0));
