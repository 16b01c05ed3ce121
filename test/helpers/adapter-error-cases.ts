/**
 * One table of the libvirt adapter's error cases, run on libvirt's test driver
 * (test/libvirt-test/adapter-errors.test.ts) and on the lab's libvirtd
 * (test/lab/libvirt-errors.test.ts): each case is a call made the way plugin/ makes it, the
 * vmdr error code it must fail with, the objects the error names, and libvirt's own error code and
 * domain (virterror.h) that the error keeps and `--json` shows. libvirt reports a failure from the
 * driver that refused it, so the domain differs between the test driver and QEMU.
 */
import assert from 'node:assert/strict';
import type { ErrorSubject } from '../../hypervisors/errors.js';
import { openAdapter } from '../../hypervisors/index.js';
import type { HypervisorAdapter, VmSpec } from '../../hypervisors/types.js';
import { rejectsWith } from './assertions.js';

export type Driver = 'test' | 'qemu';

export interface ErrorCaseFixture {
  adapter: HypervisorAdapter;
  /** A VM of this suite that is running. */
  running: string;
  /** A new VM's spec the driver can define (a unique name each time). */
  spec: (overrides?: Partial<VmSpec>) => VmSpec;
  /** Writes a domain template into the suite's scratch directory; returns its path. */
  template: (name: string, xml: string) => Promise<string>;
}

interface ErrorCase {
  what: string;
  code: string;
  /** libvirt's virErrorNumber and virErrorDomain, per driver. */
  libvirt: Record<Driver, { code: number; domain: number }>;
  attempt: (f: ErrorCaseFixture) => Promise<{ call: Promise<unknown>; subject: ErrorSubject }>;
}

// virErrorDomain
const FROM = { XML: 5, RPC: 7, QEMU: 10, TEST: 12, NETWORK: 19, DOMAIN: 20 } as const;
/** The same code from each driver's own domain. */
const fromDriver = (code: number) => ({ test: { code, domain: FROM.TEST }, qemu: { code, domain: FROM.QEMU } });
/** The same code and domain from both. */
const fromBoth = (code: number, domain: number) => ({ test: { code, domain }, qemu: { code, domain } });
const MISSING_VM = 'test-no-such-vm-errors';
const MISSING_NETWORK = 'test-no-such-network-errors';

/** A template libvirt parses but refuses: memory that is not a number. */
const BAD_MEMORY = `<domain type='qemu'><name>{{name}}</name><memory unit='MiB'>plenty</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`;
/** A template of a kind of domain no driver knows. */
const BAD_TYPE = `<domain type='no-such-type'><name>{{name}}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os></domain>`;

const CASES: ErrorCase[] = [
  {
    what: 'a missing VM asked about',
    code: 'VM_NOT_FOUND',
    libvirt: fromDriver(42 /* VIR_ERR_NO_DOMAIN */),
    attempt: async (f) => ({ call: f.adapter.getVm(MISSING_VM), subject: { vm: MISSING_VM } }),
  },
  {
    what: 'a missing VM started',
    code: 'VM_NOT_FOUND',
    libvirt: fromDriver(42 /* VIR_ERR_NO_DOMAIN */),
    attempt: async (f) => ({ call: f.adapter.start(MISSING_VM), subject: { vm: MISSING_VM } }),
  },
  {
    what: "a missing VM's screenshot",
    code: 'VM_NOT_FOUND',
    libvirt: fromDriver(42 /* VIR_ERR_NO_DOMAIN */),
    attempt: async (f) => ({ call: f.adapter.screenshot(MISSING_VM), subject: { vm: MISSING_VM } }),
  },
  {
    what: 'a missing network removed',
    code: 'NETWORK_NOT_FOUND',
    libvirt: { test: { code: 43 /* VIR_ERR_NO_NETWORK */, domain: FROM.TEST }, qemu: { code: 43, domain: FROM.NETWORK } },
    attempt: async (f) => ({ call: f.adapter.removeNetwork(MISSING_NETWORK), subject: { network: MISSING_NETWORK } }),
  },
  {
    what: 'a VM defined on a missing network',
    code: 'NETWORK_NOT_FOUND',
    libvirt: { test: { code: 43 /* VIR_ERR_NO_NETWORK */, domain: FROM.TEST }, qemu: { code: 43, domain: FROM.NETWORK } },
    attempt: async (f) => ({ call: f.adapter.defineVm(f.spec({ nics: [{ network: MISSING_NETWORK }] })), subject: { network: MISSING_NETWORK } }),
  },
  {
    what: 'a running VM started again',
    code: 'INVALID_POWER_STATE',
    // The test driver says so with VIR_ERR_INTERNAL_ERROR: vmdr asks the VM's state to tell.
    libvirt: { test: { code: 1 /* VIR_ERR_INTERNAL_ERROR */, domain: FROM.TEST }, qemu: { code: 55 /* VIR_ERR_OPERATION_INVALID */, domain: FROM.QEMU } },
    attempt: async (f) => ({ call: f.adapter.start(f.running), subject: { vm: f.running, state: 'running' } }),
  },
  {
    what: 'a definition whose XML has a value libvirt cannot read',
    code: 'DEFINITION_REJECTED',
    libvirt: fromBoth(27 /* VIR_ERR_XML_ERROR */, FROM.XML),
    attempt: async (f) => {
      const spec = f.spec({ template: await f.template('bad-memory.xml', BAD_MEMORY) });
      return { call: f.adapter.defineVm(spec), subject: { vm: spec.name } };
    },
  },
  {
    what: 'a definition of a domain type libvirt does not know',
    code: 'DEFINITION_REJECTED',
    libvirt: fromBoth(67 /* VIR_ERR_CONFIG_UNSUPPORTED */, FROM.DOMAIN),
    attempt: async (f) => {
      const spec = f.spec({ template: await f.template('bad-type.xml', BAD_TYPE) });
      return { call: f.adapter.defineVm(spec), subject: { vm: spec.name } };
    },
  },
  {
    what: 'a libvirtd that is not listening (no socket)',
    code: 'HYPERVISOR_UNREACHABLE',
    libvirt: fromBoth(38 /* VIR_ERR_SYSTEM_ERROR */, FROM.RPC),
    attempt: async () => {
      const uri = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';
      const adapter = openAdapter(uri);
      return { call: adapter.listVms().finally(() => adapter.close()), subject: { host: uri } };
    },
  },
];

/** The error as a user sees it: its code, the objects it names, and libvirt's code and domain. */
export async function assertErrorCase(driver: Driver, f: ErrorCaseFixture, c: ErrorCase): Promise<void> {
  const { call, subject } = await c.attempt(f);
  const err = await rejectsWith(call, c.code);
  const expected = { ...(subject.host === undefined ? { host: f.adapter.uri } : {}), ...subject };
  for (const [key, value] of Object.entries(expected)) assert.equal(err.subject[key], value, `subject.${key} of: ${err.message}`);
  assert.doesNotMatch(err.message, /\n/, 'one line');
  assert.deepEqual(err.toJSON().libvirt, c.libvirt[driver], `libvirt's code and domain in the JSON of: ${err.message}`);
}

/** Defines one mocha test per case; `fixture` is called when the tests run (after the before hooks). */
export function describeErrorCases(driver: Driver, fixture: () => ErrorCaseFixture): void {
  for (const c of CASES) {
    it(`${c.what}: ${c.code}, keeping libvirt's error ${c.libvirt[driver].code}`, () => assertErrorCase(driver, fixture(), c));
  }
}
