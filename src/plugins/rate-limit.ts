// Rate limits for the routes that cost the service real work and mail a third party: a
// signup hashes a password and sends an email to any address the client names, so without
// a limit the endpoint is a spam cannon. Two fixed one-minute windows, checked in order:
// one per client (request.ip: the socket's peer, or the X-Forwarded-For hop chosen by
// TRUST_PROXY; an IPv6 client by its /64, see clientKey) and one shared by every client, the
// ceiling that bounds what many addresses together can make us send. A request refused by the
// first is not counted by the second. The counters are in process memory (@fastify/rate-limit's LRU store): with N
// instances the effective limits are N times these.
import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import ipaddr from 'ipaddr.js';
import type { FastifyRequest, onRequestHookHandler } from 'fastify';
import type { Config } from '../config.js';
import { errors } from '../errors.js';

const WINDOW_MS = 60_000;
// Distinct client addresses remembered per window. Past this the least recently seen are
// forgotten (their count restarts); the global ceiling still holds.
const CLIENT_CACHE_SIZE = 10_000;

/**
 * The per-client counter's key. One IPv6 host is usually given a whole /64 (SLAAC, privacy
 * addresses) and can pick a new address in it for every request, so an IPv6 client is keyed by
 * its /64. An IPv4-mapped IPv6 address (::ffff:203.0.113.5, from a dual-stack listener) is the
 * IPv4 client it stands for. Parsed with ipaddr.js, the parser Fastify's proxy-addr uses.
 */
export function clientKey(ip: string): string {
  if (!ipaddr.isValid(ip)) return ip;
  const address = ipaddr.process(ip);
  if (address.kind() === 'ipv4') return address.toString();
  const prefix = new ipaddr.IPv6([...(address as ipaddr.IPv6).parts.slice(0, 4), 0, 0, 0, 0]);
  return `${prefix.toRFC5952String()}/64`;
}

type Limiter = (request: FastifyRequest) => Promise<{ isAllowed: boolean; isExceeded?: boolean; ttlInSeconds?: number; remaining?: number }>;

export default fp<{ config: Config; routes: readonly string[] }>(
  async (app, { config, routes }) => {
    const { perClientPerMinute, globalPerMinute } = config.rateLimit;
    if (perClientPerMinute === 0 && globalPerMinute === 0) return;

    await app.register(rateLimit, { global: false, timeWindow: WINDOW_MS, cache: CLIENT_CACHE_SIZE });
    const limiters: { max: number; check: Limiter }[] = [];
    if (perClientPerMinute > 0) limiters.push({ max: perClientPerMinute, check: app.createRateLimit({ max: perClientPerMinute, timeWindow: WINDOW_MS, keyGenerator: (request) => clientKey(request.ip) }) });
    if (globalPerMinute > 0) {
      limiters.push({ max: globalPerMinute, check: app.createRateLimit({ max: globalPerMinute, timeWindow: WINDOW_MS, keyGenerator: () => 'all-clients' }) });
    }

    const limit: onRequestHookHandler = async (request, reply) => {
      for (const { max, check } of limiters) {
        const result = await check(request);
        if (result.isAllowed || !result.isExceeded) continue;
        const seconds = Math.max(1, result.ttlInSeconds ?? 1);
        reply.header('retry-after', seconds);
        reply.header('x-ratelimit-limit', max);
        reply.header('x-ratelimit-remaining', 0);
        throw errors.rateLimited(seconds);
      }
    };

    const limited = new Set(routes);
    app.addHook('onRoute', (route) => {
      const methods = Array.isArray(route.method) ? route.method : [route.method];
      if (!methods.some((method) => limited.has(`${method} ${route.url}`))) return;
      const existing = route.onRequest;
      route.onRequest = existing === undefined ? [limit] : [...(Array.isArray(existing) ? existing : [existing]), limit];
    });
  },
  { name: 'rate-limit' },
);
