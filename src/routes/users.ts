// Thin handlers: validate, hash, one statement, answer. The mail pipeline sends the welcome
// email after COMMIT; its outbox row, written by the same statement, guarantees it is sent.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Config } from '../config.js';
import { SignupWriter } from '../db/signup-writer.js';
import { EmailTakenError } from '../db/signups.js';
import { withTransaction } from '../db/pool.js';
import { ACTIVATION_SCOPE, deleteAllForUser } from '../db/tokens.js';
import { activate, getForToken } from '../db/users.js';
import { errors } from '../errors.js';
import { ACTIVATION_TTL_MS, TOKEN_LENGTH, generateToken, hashToken } from '../tokens.js';
import { validateEmail, validateName, validatePassword, validateTokenPlaintext, type FieldErrors } from '../validation.js';
import { ActivationBody, ErrorResponse, SignupBody, UserResponse } from './schemas.js';

/** Signups per statement at most: enough for every client of a burst, small enough to plan fast. */
const MAX_SIGNUPS_PER_WRITE = 64;

/**
 * How long a signup may wait for the next one's password hash to finish, to share its
 * statement: less than one hash takes at the default cost, and only when that hash is due
 * by then.
 */
const MAX_SIGNUP_HOLD_MS = 10;

const users: FastifyPluginAsyncTypebox<{ config: Config }> = async (app, { config }) => {
  // Signups that arrive while every connection is busy share the next statement and commit,
  // and so do two whose hashes finish within a few ms of each other.
  const signupWriter = new SignupWriter(app.db, {
    maxConcurrentWrites: config.databasePoolMax,
    maxSignupsPerWrite: MAX_SIGNUPS_PER_WRITE,
    nextSignupDueInMs: () => app.passwords.nextHashDoneInMs(),
    maxHoldMs: MAX_SIGNUP_HOLD_MS,
  });
  app.post(
    '/v1/users',
    { schema: { body: SignupBody, response: { 202: UserResponse, '4xx': ErrorResponse } } },
    async (request, reply) => {
      const stopTimer = app.metrics.signupDuration.startTimer();
      const { name, email, password } = request.body;
      const fieldErrors: FieldErrors = {};
      validateName(fieldErrors, name);
      validateEmail(fieldErrors, email);
      validatePassword(fieldErrors, password);
      if (Object.keys(fieldErrors).length > 0) throw errors.failedValidation(fieldErrors);

      // Hashed before the uniqueness check, as Greenlight does: a taken address costs the same
      // time as a new one.
      const passwordHash = await app.passwords.hash(password!);
      const token = generateToken();
      const signup = { name: name!, email: email!, passwordHash, tokenHash: token.hash, tokenTtlMs: ACTIVATION_TTL_MS };
      const record = await app.mailer
        .sendWelcome(token.plaintext, (lease) => signupWriter.write({ ...signup, ...(lease ? { lease } : {}) }))
        .catch(translateSignupError);
      stopTimer();
      return reply.code(202).send({ user: record.user });
    },
  );

  app.put(
    '/v1/users/activated',
    { schema: { body: ActivationBody, response: { 200: UserResponse, '4xx': ErrorResponse } } },
    async (request) => {
      const { token } = request.body;
      const fieldErrors: FieldErrors = {};
      validateTokenPlaintext(fieldErrors, token, TOKEN_LENGTH);
      if (Object.keys(fieldErrors).length > 0) throw errors.failedValidation(fieldErrors);

      const user = await getForToken(app.db, ACTIVATION_SCOPE, hashToken(token!));
      if (!user) throw errors.invalidToken();
      const activated = await withTransaction(app.db, async (client) => {
        const updated = await activate(client, user);
        if (updated) await deleteAllForUser(client, ACTIVATION_SCOPE, user.id);
        return updated;
      });
      if (!activated) throw errors.editConflict();
      return { user: activated };
    },
  );
};

function translateSignupError(error: unknown): never {
  if (error instanceof EmailTakenError) throw errors.emailTaken();
  throw error;
}

export default users;
