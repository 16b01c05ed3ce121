/**
 * VMware Tools in a guest: vSphere's counterpart of the QEMU guest agent, and the health signal
 * a vSphere VM gives (no serial console file, and the simulator boots no guest). A guest whose
 * Tools run has booted far enough to start them.
 */
import { GuestAgentUnavailable, InvalidPowerState, VmNotFound } from '../errors.js';
import { retrieve } from './property-collector.js';
import { poll } from './poll.js';
import type { VsphereVms } from './vm.js';

/**
 * A VM whose Tools never reported yet shows them "not installed" (vCenter learns they are there
 * when they first run): only a guest up for this long without them is taken to have none.
 */
export const TOOLS_FIRST_REPORT_MS = 5 * 60_000;

/**
 * Resolves once `guest.toolsRunningStatus` is guestToolsRunning, within `timeoutMs`. At the
 * deadline: 'not-configured' (waiting cannot help) when Tools are reported not installed in a guest
 * that has been up for TOOLS_FIRST_REPORT_MS, 'not-answering' otherwise (a guest still booting).
 */
export async function waitForTools(vms: VsphereVms, uri: string, vm: string, timeoutMs: number): Promise<void> {
  let last: Record<string, unknown> = {};
  const running = await poll(
    async () => {
      last = await vms.withRef(vm, async (ref) => {
        const [found] = await retrieve(vms.session, { type: 'VirtualMachine', paths: ['runtime.powerState', 'summary.runtime.bootTime', 'guest.toolsRunningStatus', 'guest.toolsStatus'], objects: [ref] });
        if (!found) throw new VmNotFound(vm, uri);
        return found.props;
      });
      const power = String(last['runtime.powerState']);
      if (power !== 'poweredOn') throw new InvalidPowerState(vm, uri, power === 'poweredOff' ? 'shutoff' : power, 'only a running VM runs VMware Tools');
      return last['guest.toolsRunningStatus'] === 'guestToolsRunning' ? true : undefined;
    },
    { deadline: Date.now() + timeoutMs },
  );
  if (running) return;
  const upMs = Date.now() - Date.parse(String(last['summary.runtime.bootTime'] ?? ''));
  if (last['guest.toolsStatus'] === 'toolsNotInstalled' && upMs >= TOOLS_FIRST_REPORT_MS) throw new GuestAgentUnavailable(vm, uri, 'not-configured', 'VMware Tools are not installed in the guest');
  throw new GuestAgentUnavailable(vm, uri, 'not-answering', `VMware Tools are not running in the guest (${String(last['guest.toolsRunningStatus'] ?? 'no status')})`);
}
