/**
 * How the receiver answers a request that fails: a client's mistake gets its 4xx status and a
 * stable code (the sender raises the same code, so `vmdr sync` prints the receiver's words); a
 * fault of the receiver itself gets 500, "internal error" and a correlation id, and its detail
 * (paths of the DR host, SQLite's text) goes to the log only.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { VmdrError } from '../../../hypervisors/errors.js';
import { ReceiverRefused } from './errors.js';

export interface ErrorAnswer {
  status: number;
  body: { error: Record<string, unknown> & { code: string; message: string } };
  /** Set for a 500: the id in the answer and in the log line that holds the detail. */
  correlation?: string;
}

/** Codes the endpoint's routes raise for a request they cannot take, and what they answer. */
export const STATUS_OF_CODE: Record<string, number> = {
  RECOVERY_POINT_NOT_FOUND: 404,
  REPLICA_BUSY: 409,
  REPLICA_LEASE_LOST: 409,
  PROTECTION_FAILED_OVER: 409,
  INVALID_REPLICA_NAME: 400,
  PEER_UNKNOWN: 401,
  PROTECTION_UNKNOWN: 404,
  QUOTA_EXCEEDED: 403,
  // The source-site routes on the same endpoint answer for this site's hypervisor: its libvirtd
  // stopped or hung, or the VM gone, is the caller's to know by code (a failover then records the
  // source as unreachable or missing), not an internal error of this endpoint.
  HYPERVISOR_UNREACHABLE: 502,
  HYPERVISOR_TIMED_OUT: 504,
  VM_NOT_FOUND: 404,
};

/** fastify's own errors for a request it could not parse. */
const FRAMEWORK: Record<string, [number, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'BODY_TOO_LARGE'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'UNSUPPORTED_MEDIA_TYPE'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'BAD_REQUEST'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'BAD_JSON'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'BAD_JSON'],
  FST_ERR_MAX_PARAM_LENGTH: [414, 'URI_TOO_LONG'],
  FST_ERR_BAD_URL: [400, 'BAD_REQUEST'],
};

const refusal = (status: number, code: string, message: string): ErrorAnswer => ({ status, body: { error: { code, message } } });

/**
 * The answer to a request that failed with `err`. `statuses` are the codes the server answers with
 * their own status (the receiver's by default; the API adds its own): any other VmdrError is the
 * server's fault, and told as such.
 */
export function errorAnswer(err: unknown, statuses: Record<string, number> = STATUS_OF_CODE): ErrorAnswer {
  if (err instanceof ReceiverRefused) return { status: err.status, body: { error: publicError(err) } };
  if (err instanceof VmdrError && (err.code.startsWith('STREAM_') || statuses[err.code])) {
    return { status: statuses[err.code] ?? 400, body: { error: publicError(err) } };
  }
  if (err instanceof z.ZodError) {
    const issue = err.issues[0];
    return refusal(400, 'BAD_REQUEST', `${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
  }
  const fastifyCode = (err as { code?: string }).code;
  const known = fastifyCode ? FRAMEWORK[fastifyCode] : undefined;
  if (known) return refusal(known[0], known[1], (err as Error).message);
  // The client went away mid-request (its body cut): nobody reads this answer, and it is no fault of the receiver.
  if (fastifyCode === 'ECONNRESET' || fastifyCode === 'ERR_STREAM_PREMATURE_CLOSE') return refusal(400, 'CONNECTION_LOST', 'the connection was lost before the request was read');
  if (err instanceof SyntaxError) return refusal(400, 'BAD_JSON', 'the body is not valid JSON');
  const correlation = randomUUID();
  return { status: 500, correlation, body: { error: { code: 'INTERNAL', message: `internal error (correlation id ${correlation})`, correlation } } };
}

/** What a refusal tells the client: code, message, remedy and the names it concerns (never a file of this host). */
export function publicError(err: VmdrError): ErrorAnswer['body']['error'] {
  const { file: _file, path: _path, ...subject } = err.subject;
  return { code: err.code, message: err.message, ...subject, ...(err.remedy ? { remedy: err.remedy } : {}) };
}
