/**
 * How the API answers a request that failed: the status of each code a client can cause, the
 * body `{error: {code, message, ...names}}` the receiver uses too, a schema failure naming the field,
 * and for a fault of vmdr itself 500 with a correlation id (the detail goes to the log only).
 */
import type { FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { STATUS_OF_CODE, errorAnswer, publicError, type ErrorAnswer } from '../replication/receiver/answers.js';
import { ApiNotFound } from './auth.js';

const API_STATUS_OF_CODE: Record<string, number> = {
  ...STATUS_OF_CODE,
  BAD_REQUEST: 400,
  TOKEN_MISSING: 401,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  TOKEN_REVOKED: 401,
  TOKEN_READ_ONLY: 403,
  NOT_FOUND: 404,
  REPORT_NOT_STORED: 409,
  TENANT_UNKNOWN: 404,
  OPERATION_UNKNOWN: 404,
  TOKEN_UNKNOWN: 404,
  TENANT_IN_USE: 409,
  TENANT_EXISTS: 409,
  PROTECTION_EXISTS: 409,
  PROTECTION_IN_USE: 409,
  NOT_IN_CONFIG: 404,
  TENANT_INVALID: 400,
  NETWORK_IN_USE: 409,
  CONFIG_LOCKED: 409,
  CONFIG_INVALID: 400,
  QUOTA_EXCEEDED: 409,
  PROTECTION_FAILED_OVER: 409,
  SYNC_ELSEWHERE: 409,
  PROTECTION_PAUSED: 409,
  NOT_WAITING_FOR_APPROVAL: 409,
  WATCH_NOT_HELD: 409,
  REQUEST_TIMEOUT: 504,
  // The hypervisor behind the daemon failed, not the daemon nor the request: a gateway's codes.
  HYPERVISOR_UNREACHABLE: 502,
  HYPERVISOR_OPERATION_FAILED: 502,
  HYPERVISOR_TIMED_OUT: 504,
  DAEMON_BUSY: 503,
};

export function apiErrorAnswer(err: unknown): ErrorAnswer {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issue = err.validation[0];
    const where = [err.validationContext, ...(issue?.instancePath ?? '').split('/').filter(Boolean)].filter(Boolean).join('.');
    return { status: 400, body: { error: { code: 'BAD_REQUEST', message: `${where || 'request'}: ${issue?.message ?? 'invalid'}` } } };
  }
  // Whatever it is called, an object a route does not show is a 404 like any that does not exist.
  if (err instanceof ApiNotFound) return { status: 404, body: { error: publicError(err) } };
  return errorAnswer(err, API_STATUS_OF_CODE);
}

/**
 * Sends JSON made by the route itself: the answers read most (status, points), whose shape the
 * code builds field by field (typed by the route's schema) and whose schema documents them in the
 * OpenAPI document, skip zod's pass over every element of every answer: fastify sends a string
 * or bytes of a JSON content type as they are.
 */
export function sendJson(reply: FastifyReply, json: string | Buffer): FastifyReply {
  return reply.type('application/json; charset=utf-8').send(json);
}
