// The welcome email's Message-ID, derived from its outbox id: a resend after a crash carries
// the same one, so it is recognisable as the same message. The worker sets it on the message
// and the outbox records it; both import this one function.
export function welcomeMessageId(outboxId: number, domain: string): string {
  return `<welcome-${outboxId}@${domain}>`;
}
