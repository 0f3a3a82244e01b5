// The single error handler: known errors get their status and Greenlight's body; Fastify's
// own parsing and validation errors are translated to clear 400/413/415 messages; anything
// else is logged with its request context and answered with a generic 500 that hides the
// details.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isTransientDatabaseError } from './db/pool.js';
import { ApiError, errors } from './errors.js';
import { serializeError } from './logger.js';

export const BODY_LIMIT_BYTES = 1_048_576;

interface ValidationIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
}

function describeValidation(issue: ValidationIssue | undefined, body: unknown): string {
  if (body === undefined || body === null) return 'body must not be empty';
  if (!issue) return 'body is invalid';
  const field = issue.instancePath.replace(/^\//, '');
  if (issue.keyword === 'additionalProperties') return `body contains unknown key "${String(issue.params.additionalProperty)}"`;
  if (issue.keyword === 'type' && field === '') return 'body must be a JSON object';
  if (issue.keyword === 'type') return `body contains incorrect JSON type for field "${field}"`;
  return `body is invalid at "${field}"`;
}

function translate(error: FastifyError, request: FastifyRequest): ApiError | undefined {
  if (error instanceof ApiError) return error;
  if (error.validation) return errors.badRequest(describeValidation(error.validation[0] as ValidationIssue | undefined, request.body));
  switch (error.code) {
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return errors.badRequest('body must not be empty');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return errors.badRequest('body contains badly-formed JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return errors.payloadTooLarge(BODY_LIMIT_BYTES);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return errors.unsupportedMediaType();
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return errors.badRequest('the Content-Length header does not match the body');
  }
  if (isTransientDatabaseError(error)) return errors.databaseUnavailable();
  // Other 4xx raised by Fastify or a plugin (e.g. the rate limiter) keep their status.
  if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
    return new ApiError(error.code ?? 'CLIENT_ERROR', error.statusCode, { error: error.message });
  }
  return undefined;
}

export function errorHandler(error: FastifyError, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const known = translate(error, request);
  if (known) {
    if (known.statusCode >= 500) request.log.warn({ err: serializeError(error), code: known.code }, 'request failed: service unavailable');
    return reply.code(known.statusCode).send(known.body);
  }
  // serializeError here too, not only in createLogger: whatever logger the app was given, a
  // database error's echoed values (pg's `detail`) never reach the log.
  request.log.error({ err: serializeError(error), method: request.method, url: request.url }, 'request failed');
  const serverError = errors.serverError();
  return reply.code(serverError.statusCode).send(serverError.body);
}
