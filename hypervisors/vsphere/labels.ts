/**
 * vmdr's labels on vSphere objects (VMs, and the networks it made) as custom attributes: label
 * `role` is the attribute `vmdr.role`, defined once per object type (CustomFieldsManager
 * AddCustomFieldDef) and set per object (SetField). An attribute set to "" counts as absent: that
 * is how a label is removed, since a definition is shared by every object of the type.
 *
 * Values are read back from the object's `customValue` and the manager's field definitions (one
 * read per adapter, again when an unknown key shows up): the object's own `availableField` would
 * do on vCenter, but the simulator fills it only for objects that existed when the field was
 * defined.
 */
import { Unsupported, VmdrError } from '../errors.js';
import { items } from './property-values.js';
import { retrieve } from './property-collector.js';
import type { VsphereSession } from './session.js';
import type { MoRef } from './soap.js';

export const LABEL_PREFIX = 'vmdr.';

/** The instance id of the identity a VM was given (customization.ts). */
export const IDENTITY_FIELD = 'vmdr.identity';

/**
 * Attributes vmdr keeps for itself beside the labels (customization.ts's identity): never shown
 * as labels, never removed by a replacement of the labels.
 */
export const INTERNAL_FIELDS: ReadonlySet<string> = new Set([IDENTITY_FIELD]);

export type LabelledType = 'VirtualMachine' | 'Network';

interface FieldDef {
  key: string;
  name: string;
  type?: string;
}

export class CustomFields {
  private defs: Promise<FieldDef[]> | undefined;

  constructor(private readonly session: VsphereSession) {}

  /** vmdr's labels among an object's custom values: `vmdr.` fields, not internal, not empty. */
  async labelsOf(customValue: unknown): Promise<Record<string, string>> {
    const labels: Record<string, string> = {};
    for (const [name, value] of await this.valuesOf(customValue)) {
      if (!name.startsWith(LABEL_PREFIX) || INTERNAL_FIELDS.has(name) || value === '') continue;
      labels[name.slice(LABEL_PREFIX.length)] = value;
    }
    return labels;
  }

  /** One field's value, or undefined when it is unset or empty. */
  async valueOf(customValue: unknown, field: string): Promise<string | undefined> {
    const value = (await this.valuesOf(customValue)).get(field);
    return value === '' ? undefined : value;
  }

  /** Sets `labels` as vmdr's labels on `entity`, clearing the ones it has that are not in them. */
  async replaceLabels(entity: MoRef, type: LabelledType, customValue: unknown, labels: Record<string, string>): Promise<void> {
    const current = await this.labelsOf(customValue);
    const values: Record<string, string> = {};
    for (const key of Object.keys(current)) if (!(key in labels)) values[LABEL_PREFIX + key] = '';
    for (const [key, value] of Object.entries(labels)) {
      if (INTERNAL_FIELDS.has(LABEL_PREFIX + key)) throw new VmdrError('LABEL_RESERVED', `label ${JSON.stringify(key)} is reserved by vmdr's vSphere adapter`, { subject: { label: key } });
      if (current[key] !== value) values[LABEL_PREFIX + key] = value;
    }
    await this.set(entity, type, values);
  }

  /** Sets custom attributes by name, defining the ones that do not exist yet. */
  async set(entity: MoRef, type: LabelledType, values: Record<string, string>): Promise<void> {
    const fieldsManager = this.manager();
    for (const [name, value] of Object.entries(values)) {
      const key = await this.keyOf(name, type);
      await this.session.call('SetField', fieldsManager, { entity, key, value });
    }
  }

  private manager(): MoRef {
    const manager = this.session.content.customFieldsManager;
    if (!manager) throw new Unsupported("vmdr's labels (custom attributes need a vCenter; a standalone ESXi host has none)", this.session.endpoint.uri);
    return manager;
  }

  private async valuesOf(customValue: unknown): Promise<Map<string, string>> {
    const values = items<{ key: string; value?: string }>(customValue);
    let defs = await this.definitions();
    if (values.some((v) => !defs.some((d) => d.key === String(v.key)))) defs = await this.definitions(true);
    const named = new Map<string, string>();
    // The simulator appends a value per SetField: the last one is the current one.
    for (const v of values) {
      const def = defs.find((d) => d.key === String(v.key));
      if (def) named.set(def.name, typeof v.value === 'string' ? v.value : '');
    }
    return named;
  }

  private async keyOf(name: string, type: LabelledType): Promise<number> {
    const find = (defs: FieldDef[]) => defs.find((d) => d.name === name && (!d.type || d.type === type));
    const known = find(await this.definitions());
    if (known) return Number(known.key);
    try {
      const made = await this.session.call<FieldDef>('AddCustomFieldDef', this.manager(), { name, moType: type });
      this.defs = undefined;
      return Number(made.key);
    } catch (err) {
      // Another vmdr defined it between our read and our add.
      const again = find(await this.definitions(true));
      if (again) return Number(again.key);
      throw err;
    }
  }

  private definitions(refresh = false): Promise<FieldDef[]> {
    if (refresh || !this.defs) {
      const manager = this.session.content.customFieldsManager;
      // A standalone ESXi host has no custom attributes: nothing can carry a label there.
      this.defs = (manager ? retrieve(this.session, { type: 'CustomFieldsManager', paths: ['field'], objects: [manager] }) : Promise.resolve([])).then(
        ([manager]) => items<{ key: string; name: string; managedObjectType?: string }>(manager?.props.field).map((f) => ({ key: String(f.key), name: f.name, ...(f.managedObjectType ? { type: f.managedObjectType } : {}) })),
        (err: unknown) => {
          this.defs = undefined;
          throw err;
        },
      );
    }
    return this.defs;
  }
}
