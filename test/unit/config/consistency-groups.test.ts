/** The config checks of consistency groups: each fault named with its place in the file. */
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runVmdr } from '../../helpers/lab.js';
import { assertOneLineError } from '../../helpers/assertions.js';
import { parseConfig } from '../../../plugin/config/load.js';
import { ConfigInvalid } from '../../../plugin/config/errors.js';
import { coordinatorSite } from '../../../plugin/config/consistency-groups.js';

function config(groups: string, protections = ['db', 'web', 'cache'], sites: Record<string, [string, string]> = {}, tenants: Record<string, string> = {}): string {
  const entries = protections
    .map((p) => {
      const [src, dr] = sites[p] ?? ['prod', 'dr'];
      const tenant = tenants[p] ? `    tenant: ${tenants[p]}\n` : '';
      return `  - name: ${p}\n${tenant}    source: { site: ${src}, vm: ${p} }\n    target: { site: ${dr}, vm: ${p}-dr, nics: [{ network: n }] }\n`;
    })
    .join('');
  return `version: 1
tenants:
  - name: acme
  - name: globex
sites:
  - name: prod
    uri: test:///default
  - name: prod2
    uri: test:///default
  - name: dr
    uri: test:///default
  - name: dr2
    uri: test:///default
protections:
${entries}consistencyGroups:
${groups}`;
}

function refused(text: string, pattern: RegExp): void {
  assert.throws(
    () => parseConfig(text, 'vmdr.yaml'),
    (err: unknown) => {
      assert.ok(err instanceof ConfigInvalid, String(err));
      assert.match(err.message, pattern);
      return true;
    },
  );
}

describe('config: consistency groups', () => {
  it('takes a group with its defaults: crash, wait for a member that is down (1 min), a 10 s pause bound', () => {
    const [g] = parseConfig(config('  - name: app\n    protections: [db, web]\n'), 'vmdr.yaml').consistencyGroups;
    assert.deepEqual(g, { name: 'app', protections: ['db', 'web'], consistency: 'crash', onMemberDown: 'wait', memberDownWait: 60_000, pauseTimeout: 10_000 });
  });

  it('refuses an unknown member, naming it and its place', () => {
    refused(config('  - name: app\n    protections: [db, nosuch]\n'), /consistencyGroups\[0\]\.protections\[1\]: unknown protection "nosuch"/);
  });

  it('refuses a protection in two groups', () => {
    refused(
      config('  - name: app\n    protections: [db, web]\n  - name: other\n    protections: [cache, web]\n'),
      /consistencyGroups\[1\]\.protections\[1\]: protection "web" is already in consistency group "app"/,
    );
  });

  it('takes members on two source sites, coordinated by the first member\'s; refuses members going to two DR sites', () => {
    const parsed = parseConfig(config('  - name: app\n    protections: [web, db]\n', undefined, { web: ['prod2', 'dr'] }), 'vmdr.yaml');
    assert.equal(coordinatorSite(parsed.consistencyGroups[0]!, parsed.protections), 'prod2');
    refused(config('  - name: app\n    protections: [db, web]\n', undefined, { web: ['prod', 'dr2'] }), /members must go to one DR site/);
  });

  it('takes a group of one tenant\'s VMs; refuses members of two tenants, or of a tenant and the operator, naming them', () => {
    const parsed = parseConfig(config('  - name: app\n    protections: [db, web]\n', undefined, undefined, { db: 'acme', web: 'acme' }), 'vmdr.yaml');
    assert.deepEqual(parsed.consistencyGroups[0]!.protections, ['db', 'web']);
    refused(
      config('  - name: app\n    protections: [db, web]\n', undefined, undefined, { db: 'acme', web: 'globex' }),
      /consistencyGroups\[0\]\.protections: the members of group "app" belong to tenant "acme", tenant "globex": a consistency group's members must belong to one tenant/,
    );
    refused(config('  - name: app\n    protections: [db, web]\n', undefined, undefined, { web: 'acme' }), /belong to the operator \(no tenant\), tenant "acme"/);
  });

  it('refuses an unknown onMemberDown and a group of one', () => {
    refused(config('  - name: app\n    protections: [db, web]\n    onMemberDown: ignore\n'), /consistencyGroups\[0\]\.onMemberDown: expected one of "wait", "fail"/);
    refused(config('  - name: app\n    protections: [db]\n'), /consistencyGroups\[0\]\.protections: at least two protections/);
  });

  it('vmdr sync: a protection or --group, one of the two (exit 2); an unknown group named with the known ones', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'vmdr-groups-'));
    try {
      const file = join(dir, 'vmdr.yaml');
      await writeFile(file, `state: { path: ${join(dir, 'state.db')} }\n` + config('  - name: app\n    protections: [db, web]\n'));
      const neither = await runVmdr(['sync', '--config', file]);
      assert.deepEqual([neither.code, neither.stderr.trim()], [2, 'vmdr: name a protection or --group, one of the two (see vmdr sync --help)']);
      assert.equal((await runVmdr(['sync', 'db', '--group', 'app', '--config', file])).code, 2);
      const unknown = await runVmdr(['sync', '--group', 'shop', '--config', file]);
      assert.equal(unknown.code, 1);
      assert.equal(unknown.stderr.trim(), `vmdr: no consistency group "shop" in ${file}: known groups are app`);
      // Members on two source sites: the cycle runs on the first member's; another host is told where.
      const across = join(dir, 'across.yaml');
      await writeFile(across, `localSite: prod2\nstate: { path: ${join(dir, 'state.db')} }\n` + config('  - name: app\n    protections: [db, web]\n', undefined, { web: ['prod2', 'dr'] }));
      const elsewhere = await runVmdr(['sync', '--group', 'app', '--config', across]);
      assertOneLineError(elsewhere, /^vmdr: consistency group "app" is coordinated by site "prod" \(its first member's source site\), and this host is site "prod2"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
