// The JSON body parser. Fastify's built-in parser already refuses __proto__ and
// constructor.prototype keys, but reports them as "not valid JSON"; this one uses the same
// library (secure-json-parse) and says what is wrong, so a client learns why it got a 400.
import fp from 'fastify-plugin';
import secureJson from 'secure-json-parse';
import { errors } from '../errors.js';

export default fp<{ bodyLimit: number }>(
  async (app, { bodyLimit }) => {
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit }, (_request, body, done) => {
      const text = body as string;
      if (text.trim() === '') return done(errors.badRequest('body must not be empty'), undefined);
      try {
        done(null, secureJson.parse(text, undefined, { protoAction: 'error', constructorAction: 'error' }));
      } catch (error) {
        // secure-json-parse's own refusal is a SyntaxError naming the prototype property; a
        // plain JSON.parse failure is any other SyntaxError.
        const poisoned = error instanceof SyntaxError && /prototype/.test(error.message);
        done(errors.badRequest(poisoned ? 'body contains a forbidden key (__proto__ or constructor)' : 'body contains badly-formed JSON'), undefined);
      }
    });
  },
  { name: 'json-body' },
);
