/**
 * Reading properties of many objects in one exchange (PropertyCollector.RetrievePropertiesEx, then
 * ContinueRetrievePropertiesEx while the server holds more): only the paths asked for, of objects
 * named one by one or of every object of a type under a container (a ContainerView, recursive,
 * destroyed afterwards).
 */
import { asArray, type MoRef } from './soap.js';
import type { VsphereSession } from './session.js';

export interface RetrieveRequest {
  /** The managed object type (VirtualMachine, Datastore, …). */
  type: string;
  /** Property paths (name, runtime.powerState, config.hardware.device). */
  paths: string[];
  /** Every object of `type` under this one, recursively. Default: the root folder. */
  container?: MoRef;
  /** Exactly these objects (instead of a container). */
  objects?: MoRef[];
  signal?: AbortSignal;
}

export interface RetrievedObject {
  ref: MoRef;
  /** By path; a path the object has no value for is absent. */
  props: Record<string, unknown>;
}

interface ObjectContent {
  obj: MoRef;
  propSet?: { name: string; val?: unknown } | { name: string; val?: unknown }[];
  missingSet?: { path: string; fault: unknown } | { path: string; fault: unknown }[];
}

interface RetrieveResult {
  token?: string;
  objects?: ObjectContent | ObjectContent[];
}

export async function retrieve(session: VsphereSession, request: RetrieveRequest): Promise<RetrievedObject[]> {
  const options = request.signal ? { signal: request.signal } : {};
  if (request.objects) {
    if (request.objects.length === 0) return [];
    return collect(session, request, request.objects.map((obj) => ({ obj, skip: false })), options);
  }
  const view = await session.call<MoRef>(
    'CreateContainerView',
    session.content.viewManager,
    { container: request.container ?? session.content.rootFolder, type: [request.type], recursive: true },
    options,
  );
  try {
    const traversal = { _type: 'TraversalSpec', name: 'view', type: 'ContainerView', path: 'view', skip: false };
    return await collect(session, request, [{ obj: view, skip: true, selectSet: [traversal] }], options);
  } finally {
    await session.call('DestroyView', view, {}, {}).catch(() => undefined);
  }
}

async function collect(session: VsphereSession, request: RetrieveRequest, objectSet: object[], options: { signal?: AbortSignal }): Promise<RetrievedObject[]> {
  const collector = session.content.propertyCollector;
  const specSet = { propSet: [{ type: request.type, all: false, pathSet: request.paths }], objectSet };
  const found: RetrievedObject[] = [];
  let result = await session.call<RetrieveResult | undefined>('RetrievePropertiesEx', collector, { specSet, options: {} }, options);
  for (;;) {
    for (const content of asArray(result?.objects)) {
      const props: Record<string, unknown> = {};
      for (const prop of asArray(content.propSet)) props[prop.name] = prop.val;
      found.push({ ref: content.obj, props });
    }
    if (!result?.token) return found;
    result = await session.call<RetrieveResult | undefined>('ContinueRetrievePropertiesEx', collector, { token: result.token }, options);
  }
}
