// The flags node runs the service with: `npm start` passes them, and so do the tests and the
// benchmarks when they start the service. Run by hand, it is `node --single-threaded-gc
// dist/src/server.js`. They are V8 flags, which only take effect on the command line: V8
// reads them when it sets up a heap, and changing them at run time (v8.setFlagsFromString)
// aborts the process at the next collection.
//
// --single-threaded-gc: each isolate collects its own garbage on its own thread, instead of
// handing marking, sweeping and scavenging to V8's background threads. The service runs one
// isolate per thread (the API thread and one mail thread per core), and on the small machines
// it is sized for, the background threads compete with those same threads for the cores: the
// hand-offs cost more CPU than they save. With it, `npm run bench -- e2e` measured about 8 %
// less CPU per signup and email and 8 % more emails/s (docs/benchmarks.md, cut 7). Each thread
// now does its own marking between its tasks; with the service's small heaps the API thread's
// event-loop delay under `npm run bench -- offload` was no higher with it than without.
export const SERVICE_NODE_FLAGS: readonly string[] = ['--single-threaded-gc'];
