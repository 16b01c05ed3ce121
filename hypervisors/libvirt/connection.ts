/**
 * The connection to libvirtd through @unraid/libvirt (N-API). It opens on first use, and every
 * call goes through `call`, which turns libvirt's failures into vmdr's typed errors.
 */
import { Hypervisor, type Domain } from '@unraid/libvirt';
import { neverReachedLibvirt, translateLibvirtError, type LibvirtErrorContext } from './errors.js';

export type { Domain };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export class LibvirtConnection {
  private opening: Promise<Hypervisor> | undefined;

  constructor(readonly uri: string) {}

  /**
   * libvirt's test driver lives inside this process: a virsh child process opening the same URI
   * gets a fresh, separate copy of it. Operations that can only be done through virsh are therefore
   * not available on test:// URIs.
   */
  get virshSharesState(): boolean {
    return !/^test(\+[a-z0-9]+)?:/i.test(this.uri);
  }

  async open(): Promise<Hypervisor> {
    // A failed open is forgotten so the next call tries again (libvirtd may have been started since).
    this.opening ??= (async () => {
      const hypervisor = new Hypervisor({ uri: this.uri });
      await hypervisor.connectOpen();
      return hypervisor;
    })().catch((err: unknown) => {
      this.opening = undefined;
      throw translateLibvirtError(err, { operation: 'connect', host: this.uri });
    });
    return this.opening;
  }

  async close(): Promise<void> {
    const opening = this.opening;
    this.opening = undefined;
    if (!opening) return;
    const hypervisor = await opening.catch(() => undefined);
    // Not through call(), which would open a fresh connection first. One libvirtd already closed
    // (it restarted) is closed.
    await hypervisor?.connectClose().catch((err: unknown) => {
      if (!neverReachedLibvirt(err)) throw translateLibvirtError(err, { operation: 'close the connection', host: this.uri });
    });
  }

  /**
   * Runs one binding call; its failure comes back as a typed error naming this host. A call on a
   * connection libvirtd closed since (it restarted) runs once more on a fresh connection.
   */
  async call<T>(ctx: Omit<LibvirtErrorContext, 'host'>, fn: (hypervisor: Hypervisor) => Promise<T>, retried = false): Promise<T> {
    const hypervisor = await this.open();
    try {
      return await fn(hypervisor);
    } catch (err) {
      const translated = translateLibvirtError(err, { ...ctx, host: this.uri });
      // libvirtd went away under us (restart, crash): the next call opens a fresh connection
      // instead of failing forever on this dead one.
      if (translated.code === 'HYPERVISOR_UNREACHABLE') this.opening = undefined;
      if (translated.code === 'HYPERVISOR_UNREACHABLE' && !retried && neverReachedLibvirt(err)) return this.call(ctx, fn, true);
      throw translated;
    }
  }

  /** Resolves a VM by UUID or name; a VM named like a UUID is still found by its name. */
  async lookup(ref: string): Promise<Domain> {
    return this.call({ operation: 'look up VM', vm: ref }, async (h) => {
      if (UUID.test(ref)) {
        try {
          return await h.domainLookupByUUIDString(ref);
        } catch {
          // Not a UUID of any VM: fall through to names.
        }
      }
      return h.domainLookupByName(ref);
    });
  }
}
