/**
 * Which vim25 fault is behind an error the client raised: the type faults.ts kept on a
 * VsphereFault, or on the SoapFault a mapped error carries as its cause. For the faults the
 * adapter handles itself (FileAlreadyExists: register instead; CustomizationPending;
 * ToolsUnavailable; DuplicateName of a port group), by type, never by message.
 */
export function faultType(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const type = (e as { faultType?: unknown }).faultType;
    if (typeof type === 'string') return type;
  }
  return undefined;
}

/** The file a FileFault (FileAlreadyExists, FileLocked …) names, as the server wrote it. */
export function faultFile(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const file = (e as { detail?: { file?: unknown } }).detail?.file;
    if (typeof file === 'string') return file;
  }
  return undefined;
}
