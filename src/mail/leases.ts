// Leases: the rules by which an instance owns an outbox row while it works on it. A row in
// `sending` belongs to lease_owner until lease_expires_at; after that any instance may claim
// it again (its owner died). A row is leased either at birth (the signup statement, when this
// instance will send it at once) or by a sweeper's claim, and leaves the lease when its result
// is recorded or when it is released (handed back, due now). lease_owner is set exactly while a
// row is `sending` (a constraint of the table).
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

/** Who holds a lease and for how long; the outbox queries take it as it is. */
export interface Lease {
  readonly owner: string;
  readonly ms: number;
}

/** This instance's lease owner id: host, pid and a random suffix (pids repeat across hosts and restarts). */
export function newLeaseOwner(): string {
  return `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}
