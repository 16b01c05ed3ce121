/**
 * The console's last lines as a drill's evidence keeps them: only the file's tail is read, and
 * what a terminal would not show as text (escape sequences, control characters, carriage-return
 * overwrites) is gone.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { consoleTail, CONSOLE_LINES } from '../../../plugin/failover/evidence.js';

describe("a drill's console evidence", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'vmdr-evidence-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('keeps the last 40 lines that have text, oldest first', async () => {
    const file = join(dir, 'many.log');
    await writeFile(file, Array.from({ length: 100 }, (_, i) => `line ${i}\r\n\n`).join(''));
    const lines = await consoleTail(file);
    assert.equal(lines.length, CONSOLE_LINES);
    assert.deepEqual([lines[0], lines.at(-1)], ['line 60', 'line 99']);
  });

  it('removes escape sequences and control characters, and keeps what a carriage return left on the line', async () => {
    const file = join(dir, 'ansi.log');
    await writeFile(file, '\x1b[1;32mOK\x1b[0m started\x07 sshd\nprogress 10%\rprogress 100%\n\x00\x1b[2J\nbell\x7f end\n');
    assert.deepEqual(await consoleTail(file), ['OK started sshd', 'progress 100%', 'bell end']);
  });

  it('reads only the tail of a large console, without the piece of a line it starts inside', async () => {
    const file = join(dir, 'large.log');
    const line = `${'x'.repeat(99)}\n`;
    await writeFile(file, `FIRST\n${line.repeat(50_000)}the last line\n`);
    const lines = await consoleTail(file, 3);
    assert.deepEqual(lines.at(-1), 'the last line');
    assert.ok(lines.slice(0, 2).every((l) => l === 'x'.repeat(99)));
  });

  it('a console that does not exist has no lines', async () => {
    assert.deepEqual(await consoleTail(join(dir, 'missing.log')), []);
  });
});
