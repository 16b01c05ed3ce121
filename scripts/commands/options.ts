import { duration } from '../../plugin/config/schema.js';

/** Options every command shares, declared once. */
export interface GlobalOptions {
  config: string;
  json: boolean;
}

/** What is wrong with a --shutdown-timeout, in the schema's own words; undefined when it is fine. */
export function shutdownTimeoutProblem(timeout: string | undefined): string | undefined {
  if (timeout === undefined) return undefined;
  const parsed = duration.safeParse(timeout);
  return parsed.success ? undefined : `--shutdown-timeout ${JSON.stringify(timeout)} is not ${parsed.error.issues[0]?.message ?? 'a duration'}`;
}
