/** The crash tests' failpoints live beside the adapters, which hold VMs and so have points of their own. */
export { failpoint } from '../../../hypervisors/failpoints.js';
