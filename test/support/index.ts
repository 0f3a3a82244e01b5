// The test and benchmark support kit, for test files. It loads the leak check (node:test
// hooks), so benchmarks import the modules they need directly instead:
//   scope.ts     who closes what (a test's `t`, the file's `file`, a benchmark's CleanupStack)
//   leak-check   `file`, and the end-of-file proof that nothing was left open
//   wait.ts      waitUntil: poll with a deadline
//   env.ts       shared settings and unique names
//   database.ts  a fresh database per file or run, temporary folders and PostgreSQL
//   pending.ts   users with a pending welcome email, straight into the tables
//   outbox-rows  outbox rows and tokens of any status and age, for the operator's tools
//   smtp.ts      the SMTP sink (smtp-sink-process.ts runs it in a child process)
//   faulty-smtp  the sink refusing at a chosen SMTP step (AUTH, MAIL FROM, RCPT TO, DATA, STARTTLS)
//   service.ts   the compiled service as a child process, its JSON logs parsed
//   processes    processes still running on a folder; process groups
//   app.ts       the app in-process, logs captured
//   load.ts      the signup load generator
//   prom.ts      a Prometheus text reader
//   http.ts      a JSON request to a running service
//   command.ts   a built script (a CLI) run to completion
export { file } from './leak-check.js';
export * from './app.js';
export * from './command.js';
export * from './database.js';
export * from './env.js';
export * from './faulty-smtp.js';
export * from './http.js';
export * from './load.js';
export * from './outbox-rows.js';
export * from './pending.js';
export * from './processes.js';
export * from './prom.js';
export * from './scope.js';
export * from './service.js';
export * from './smtp.js';
export * from './wait.js';
