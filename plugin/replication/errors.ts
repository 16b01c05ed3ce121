import { VmdrError } from '../../hypervisors/errors.js';

/** qemu-img (or another image tool) refused or failed: the image, the operation and its stderr. */
export class ImageOperationFailed extends VmdrError {
  constructor(operation: string, file: string, detail: string, cause?: unknown) {
    super('IMAGE_OPERATION_FAILED', `${operation} ${file}: ${detail}`, { subject: { file }, cause });
  }
}
