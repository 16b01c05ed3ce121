/**
 * A second process that changes a config through editConfig, for the tests of its lock and its
 * atomic write: `config-editor.ts FILE PREFIX COUNT [HOLD_MS]` adds tenants PREFIX-0 ...
 * PREFIX-(COUNT-1), one edit each, holding each edit (inside the lock) for HOLD_MS; it prints
 * "holding" when its first edit holds the lock and "edited N" once edit N is written.
 */
import { appendItem, editConfig } from '../../plugin/config/edit.js';

const [file, prefix, count, holdMs] = process.argv.slice(2);
for (let i = 0; i < Number(count); i++) {
  await editConfig(file!, async (doc) => {
    appendItem(doc, 'tenants', { name: `${prefix}-${i}` });
    if (i === 0) process.stdout.write('holding\n');
    if (holdMs) await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
  });
  process.stdout.write(`edited ${i}\n`);
}
