// Request and response shapes. Bodies check structure and types only (400 when wrong); the
// values are checked by Greenlight's rules in validation.ts (422). Response schemas list the
// fields that may leave the service: a password hash can never be serialised.
import { Type } from '@fastify/type-provider-typebox';

export const UserResponse = Type.Object({
  user: Type.Object({
    id: Type.Integer(),
    // A Date from pg, serialised as an ISO 8601 string.
    created_at: Type.Unsafe<Date | string>(Type.String({ format: 'date-time' })),
    name: Type.String(),
    email: Type.String(),
    activated: Type.Boolean(),
  }),
});

export const SignupBody = Type.Object(
  { name: Type.Optional(Type.String()), email: Type.Optional(Type.String()), password: Type.Optional(Type.String()) },
  { additionalProperties: false },
);

export const ActivationBody = Type.Object({ token: Type.Optional(Type.String()) }, { additionalProperties: false });

export const ErrorResponse = Type.Object({ error: Type.Union([Type.String(), Type.Record(Type.String(), Type.String())]) });
