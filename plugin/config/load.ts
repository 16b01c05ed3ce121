/**
 * Reads vmdr.yaml. Every error names the file, where in it (line:column and the path of keys) and
 * what was expected, in one line: operators fix configs under pressure, often mid-incident.
 */
import { isAlias, isMap, isNode, isPair, isScalar, isSeq, Lexer, LineCounter, parseDocument, visit, type Document, type YAMLMap } from 'yaml';
import type { z } from 'zod';
import { ConfigSchema, type Config } from './schema.js';
import { ConfigInvalid } from './errors.js';
import { checkConfigRunbooks } from '../runbooks/load.js';
import { configFingerprint, MAX_CONFIG_BYTES, readConfigText, TOO_LARGE } from './text.js';

export { MAX_CONFIG_BYTES };

/**
 * How many values (keys, values, list items) a config may hold, each alias counting as a copy of
 * what it names. A realistic 1 MiB config holds about 120,000; the schema's work (and its list of
 * issues) grows with this count, not with the bytes: a million empty {} took 1 GiB. It leaves room
 * for a block shared by a thousand protections, and none for a "billion laughs". The yaml
 * library's maxAliasCount (a coarser count of alias copies) is set to it as a second guard.
 */
export const MAX_VALUES = 200_000;
/**
 * How many anchors and aliases a config may have in all. The yaml library resolves each alias by a
 * scan of every anchor and alias before it: 150,000 aliases took 458 s. A thousand protections
 * sharing a few blocks need a few thousand.
 */
export const MAX_ALIASES = 10_000;
/** Flow collections ([ and {) nested deeper cost the parser memory for no config's sake. */
export const MAX_FLOW_DEPTH = 32;

/** Something wrong in a YAML document that parsed: where (keys and offset) and what. */
interface Finding {
  path: (string | number)[];
  offset: number;
  problem: string;
}

export interface LoadedConfig {
  file: string;
  config: Config;
  /** Which text it was (configFingerprint): a daemon and a CLI tell whether they read the same. */
  fingerprint: string;
}

export async function loadConfig(file: string): Promise<LoadedConfig> {
  const text = await readConfigText(file);
  const config = parseConfig(text, file);
  await checkConfigRunbooks(config);
  return { file, config, fingerprint: configFingerprint(text) };
}

export function parseConfig(text: string, file: string): Config {
  if (text.length > MAX_CONFIG_BYTES) throw new ConfigInvalid(file, {}, TOO_LARGE);
  if (flowDepth(text) > MAX_FLOW_DEPTH) throw new ConfigInvalid(file, {}, `not valid YAML: [ and { nested more than ${MAX_FLOW_DEPTH} deep`);
  const lines = new LineCounter();
  // The library's own duplicate-key check compares every key with every other (minutes for a
  // large map): duplicateKey() does it with a set.
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = lines.linePos(syntax.pos[0]);
    const problem =
      syntax.code === 'RESOURCE_EXHAUSTION' ? 'nested too deeply' : syntax.code === 'MULTIPLE_DOCS' ? 'more than one document (---)' : syntax.message.split('\n')[0];
    throw new ConfigInvalid(file, { position: `${pos.line}:${pos.col}` }, `not valid YAML: ${problem}`);
  }
  const finding = duplicateKey(doc) ?? countValues(doc);
  if (finding) {
    const pos = lines.linePos(finding.offset);
    throw new ConfigInvalid(file, { position: `${pos.line}:${pos.col}`, keyPath: locate(doc, lines, finding.path).keyPath }, finding.problem);
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: MAX_VALUES });
  } catch (err) {
    // toJS throws only for aliases, and countValues() found none wrong: the library counts more.
    throw new ConfigInvalid(file, {}, `YAML aliases copy more than ${MAX_VALUES} values`, err);
  }
  const result = ConfigSchema.safeParse(data ?? {});
  if (result.success) return result.data;
  const first = result.error.issues[0]!;
  const path = first.path.filter((k): k is string | number => typeof k !== 'symbol');
  throw new ConfigInvalid(file, locate(doc, lines, path), describe(first, doc.hasIn(path)));
}

/** How deep [ and { nest, counted by the lexer alone (cheap), stopping once past the limit. */
function flowDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  for (const token of new Lexer().lex(text)) {
    if (token === '[' || token === '{') deepest = Math.max(deepest, ++depth);
    else if (token === ']' || token === '}') depth--;
    if (deepest > MAX_FLOW_DEPTH) break;
  }
  return deepest;
}

/** The first key that appears twice in one mapping (the last would silently win). */
function duplicateKey(doc: Document): Finding | undefined {
  let found: Finding | undefined;
  visit(doc, {
    Map(_key, map: YAMLMap, ancestors) {
      const seen = new Set<string>();
      for (const pair of map.items) {
        if (!isScalar(pair.key)) continue;
        const key = String(pair.key.value);
        if (seen.has(key)) {
          found = { path: keyPath([...ancestors, map, pair]), offset: pair.key.range?.[0] ?? 0, problem: `duplicate key "${key}"` };
          return visit.BREAK;
        }
        seen.add(key);
      }
      return undefined;
    },
  });
  return found;
}

/**
 * The first alias that names no anchor or sits inside the value it names, the first value past
 * MAX_VALUES, or the first anchor or alias past MAX_ALIASES. One walk in document order, each
 * anchor's size measured once, so a bomb costs no more to measure than to read.
 */
function countValues(doc: Document): Finding | undefined {
  const anchors = new Map<string, unknown>();
  const sizes = new Map<unknown, number>();
  const path: (string | number)[] = [];
  let total = 0;
  let named = 0;
  let found: Finding | undefined;
  const refuse = (offset: number, problem: string) => {
    found ??= { path: [...path], offset, problem };
  };
  const measure = (node: unknown): number => {
    if (found || !isNode(node)) return 0;
    const offset = node.range?.[0] ?? 0;
    if ((isAlias(node) || node.anchor) && ++named > MAX_ALIASES) refuse(offset, `more than ${MAX_ALIASES} YAML anchors and aliases`);
    if (isAlias(node)) {
      const size = sizes.get(anchors.get(node.source));
      if (!anchors.has(node.source)) refuse(offset, `alias *${node.source} names no anchor before it`);
      else if (size === undefined) refuse(offset, `alias *${node.source} is inside the value it names`);
      else if ((total += size) > MAX_VALUES) refuse(offset, `YAML aliases bring the config past ${MAX_VALUES} values`);
      return size ?? 0;
    }
    if ((total += 1) > MAX_VALUES) refuse(offset, `more than ${MAX_VALUES} values: a config is a page of settings, not a data set`);
    const anchor = node.anchor;
    if (anchor) anchors.set(anchor, node);
    let size = 1;
    if (isMap(node)) {
      for (const pair of node.items) {
        path.push(isScalar(pair.key) ? String(pair.key.value) : '?');
        size += measure(pair.key) + measure(pair.value);
        path.pop();
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, i) => {
        path.push(i);
        size += measure(item);
        path.pop();
      });
    }
    if (anchor) sizes.set(node, size);
    return size;
  };
  measure(doc.contents);
  return found;
}

/** The keys and indexes leading through a chain of YAML nodes, from the document down. */
function keyPath(chain: readonly unknown[]): (string | number)[] {
  const keys: (string | number)[] = [];
  chain.forEach((node, i) => {
    if (isPair(node) && isScalar(node.key)) keys.push(String(node.key.value));
    else if (isSeq(node)) keys.push(node.items.indexOf(chain[i + 1] as never));
  });
  return keys;
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
