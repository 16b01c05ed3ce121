// The class lives beside the adapter interface: the libvirt adapter's offline export raises it too.
export { ImageOperationFailed } from '../../hypervisors/errors.js';
