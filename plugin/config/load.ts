/**
 * Reads vmdr.yaml. Every error names the file, where in it (line:column and the path of keys) and
 * what was expected, in one line: operators fix configs under pressure, often mid-incident.
 */
import { readFile } from 'node:fs/promises';
import { LineCounter, parseDocument, type Document } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, type Config } from './schema.js';
import { ConfigInvalid } from './errors.js';

export interface LoadedConfig {
  file: string;
  config: Config;
}

export async function loadConfig(file: string): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const problem = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory, not a config file' : `cannot read (${code})`;
    throw new ConfigInvalid(file, {}, problem, err);
  }
  return { file, config: parseConfig(text, file) };
}

export function parseConfig(text: string, file: string): Config {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = lines.linePos(syntax.pos[0]);
    throw new ConfigInvalid(file, { position: `${pos.line}:${pos.col}` }, `not valid YAML: ${syntax.message.split('\n')[0]}`);
  }
  const result = ConfigSchema.safeParse(doc.toJS() ?? {});
  if (result.success) return result.data;
  const first = result.error.issues[0]!;
  const path = first.path.filter((k): k is string | number => typeof k !== 'symbol');
  throw new ConfigInvalid(file, locate(doc, lines, path), describe(first, doc.hasIn(path)));
}

/** line:col of the deepest node that exists on the issue's path, and the path itself. */
function locate(doc: Document, lines: LineCounter, keys: (string | number)[]): { position?: string; keyPath?: string } {
  let position = '';
  for (let depth = keys.length; depth >= 0 && !position; depth--) {
    const node = doc.getIn(keys.slice(0, depth), true) as { range?: [number, number, number] } | undefined;
    if (node?.range) {
      const pos = lines.linePos(node.range[0]);
      position = `${pos.line}:${pos.col}`;
    }
  }
  const keyPath = keys.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');
  return { position: position || undefined, keyPath: keyPath || undefined };
}

function describe(issue: z.core.$ZodIssue, present: boolean): string {
  if (!present && issue.path.length > 0 && (issue.code === 'invalid_type' || issue.code === 'invalid_value')) {
    return `missing; expected ${expected(issue)}`;
  }
  switch (issue.code) {
    case 'invalid_type':
    case 'invalid_value':
      return `expected ${expected(issue)}`;
    case 'unrecognized_keys':
      return `unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
    case 'invalid_format':
    case 'custom':
    case 'too_small':
    case 'too_big':
    default:
      return issue.message.replace(/^Invalid string: must match pattern .*$/, 'invalid value');
  }
}

function expected(issue: z.core.$ZodIssueInvalidType | z.core.$ZodIssueInvalidValue): string {
  if (issue.code === 'invalid_type') return issue.expected;
  const values = issue.values.map((v) => JSON.stringify(v));
  return values.length === 1 ? values[0]! : `one of ${values.join(', ')}`;
}
