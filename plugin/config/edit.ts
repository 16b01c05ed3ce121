/**
 * The one way vmdr changes its own config file (`vmdr tenant create`, later the API): a change is
 * a mutation of the YAML document, so the operator's comments, order and spelling survive; the
 * result must pass the same checks as loadConfig before it is written; the file is replaced
 * atomically, so a crash at any moment leaves the old config or the new one, never half of one;
 * and one change at a time holds the lock beside the file.
 */
import { randomBytes } from 'node:crypto';
import { chown, open, readdir, realpath, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isSeq, parseDocument, type Document } from 'yaml';
import { ConfigInvalid, ConfigNotWritable } from './errors.js';
import { parseConfig } from './load.js';
import { lockConfig } from './lock.js';
import type { Config } from './schema.js';
import { configFingerprint, readConfigText } from './text.js';

/** How long a change waits for another one to finish: changes take milliseconds. */
export const CONFIG_LOCK_WAIT_MS = 5_000;

export interface ConfigEdit<T> {
  /** What the mutation returned. */
  result: T;
  /** The config as written (or as it was, when the mutation changed nothing). */
  config: Config;
  fingerprint: string;
  /** False when the mutation left the text as it was: nothing was written. */
  changed: boolean;
}

/**
 * Applies `mutate` to the config's YAML document and writes the result. `mutate` receives the
 * document and the config it holds (already valid); it may throw to refuse the change (nothing is
 * written). A result that does not pass the schema and its reference checks is refused with
 * CONFIG_INVALID naming the path inside the config, and the file is left as it was.
 */
export async function editConfig<T>(
  file: string,
  mutate: (doc: Document, config: Config) => T | Promise<T>,
  options: { lockWaitMs?: number } = {},
): Promise<ConfigEdit<T>> {
  // A symlinked config is changed where it points, and stays a symlink.
  const target = await realpath(file).catch(async (err: unknown) => {
    await readConfigText(file); // says what is wrong with the file, in loadConfig's words
    throw err;
  });
  const lock = await lockConfig(file, `${target}.lock`, options.lockWaitMs ?? CONFIG_LOCK_WAIT_MS);
  try {
    await removeLeftovers(target);
    const text = await readConfigText(target);
    const config = parseConfig(text, file);
    const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: false });
    const result = await mutate(doc, config);
    // lineWidth 0: long values the operator wrote on one line stay on one line.
    const changedText = doc.toString({ lineWidth: 0 });
    if (changedText === text) return { result, config, fingerprint: configFingerprint(text), changed: false };
    let changedConfig: Config;
    try {
      changedConfig = parseConfig(changedText, file);
    } catch (err) {
      if (!(err instanceof ConfigInvalid)) throw err;
      // The position would be in a text that was never written: the path says where.
      throw new ConfigInvalid(file, { keyPath: err.where.keyPath }, `${err.problem} (the change was refused; the file is unchanged)`, err);
    }
    await replaceFile(file, target, changedText);
    return { result, config: changedConfig, fingerprint: configFingerprint(changedText), changed: true };
  } finally {
    await lock.release();
  }
}

/**
 * Adds `item` to the top-level list `key` (tenants, protections ...), making the list when the
 * config has none. An empty flow list (`tenants: []`) becomes a block list: one item per line.
 */
export function appendItem(doc: Document, key: string, item: unknown): void {
  const list = doc.get(key, true);
  if (list === undefined || list === null) {
    doc.set(key, doc.createNode([item]));
    return;
  }
  if (isSeq(list) && list.items.length === 0) list.flow = false;
  doc.addIn([key], doc.createNode(item));
}

/**
 * Takes the items named `names` out of the top-level list `key`. The list's items are the
 * config's, in the same order (the schema keeps it): `config[key][i]` is the document's item i.
 */
export function removeNamedItems(doc: Document, key: string, items: readonly { name: string }[], names: ReadonlySet<string>): void {
  for (let i = items.length - 1; i >= 0; i--) if (names.has(items[i]!.name)) doc.deleteIn([key, i]);
}

/** `.vmdr.yaml.<pid>.<random>.tmp`: hidden, beside the file, so rename() stays in one filesystem. */
const tempPrefix = (target: string) => `.${basename(target)}.`;
const TEMP_SUFFIX = '.tmp';

/**
 * A temporary file of an edit that crashed before its rename. Only an edit holding the lock
 * writes one, and we hold it now: any such file is a leftover.
 */
async function removeLeftovers(target: string): Promise<void> {
  const dir = dirname(target);
  const prefix = tempPrefix(target);
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    if (name.startsWith(prefix) && name.endsWith(TEMP_SUFFIX) && /^\d+\.[0-9a-f]+$/.test(name.slice(prefix.length, -TEMP_SUFFIX.length))) {
      await rm(join(dir, name), { force: true });
    }
  }
}

/**
 * Writes `text` beside `target` with its mode and owner, flushes it, renames it over `target` and
 * flushes the directory: after a crash the name holds the old text or the new one, whole.
 */
async function replaceFile(file: string, target: string, text: string): Promise<void> {
  const dir = dirname(target);
  const temp = join(dir, `${tempPrefix(target)}${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
  const refuse = (step: string) => (err: NodeJS.ErrnoException) => {
    throw new ConfigNotWritable(file, `${step}: ${err.code ?? err.message}`, err);
  };
  const before = await stat(target);
  const mode = before.mode & 0o7777;
  try {
    const handle = await open(temp, 'wx', mode).catch(refuse(`create ${temp}`));
    try {
      // The umask (vmdr's is 077) narrowed the mode open() gave: the config keeps its own.
      await handle.chmod(mode).catch(refuse(`set the mode of ${temp}`));
      if (before.uid !== process.getuid?.() || before.gid !== process.getgid?.()) {
        await chown(temp, before.uid, before.gid).catch(refuse(`give ${temp} the config's owner`));
      }
      await handle.writeFile(text).catch(refuse(`write ${temp}`));
      await handle.sync().catch(refuse(`flush ${temp}`));
    } finally {
      await handle.close();
    }
    await rename(temp, target).catch(refuse(`rename ${temp} over the config`));
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
  // The rename is durable once the directory is flushed.
  const directory = await open(dir, 'r');
  try {
    await directory.sync();
  } finally {
    await directory.close();
  }
}
