/**
 * XML templates under templates/ with `{{name}}` placeholders in attribute values and text.
 * Placeholders are filled in the parsed tree, not in the file's text, so a value can never open or
 * close an element: the builder escapes it like any other text.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { TemplateInvalid, TemplateValueMissing } from '../errors.js';
import { parseXml, type XmlElement, type XmlNode } from './xml.js';

const PLACEHOLDER = /\{\{\s*([A-Za-z_][\w.-]*)\s*\}\}/g;

export type TemplateValues = Record<string, string | number | undefined>;

let templatesRoot: string | undefined;

/**
 * templates/ sits beside package.json. Walking up from this module finds it both from source
 * (hypervisors/libvirt/, run by tsx) and from the build (dist/hypervisors/libvirt/).
 */
export function templatesDir(): string {
  if (templatesRoot) return templatesRoot;
  for (let dir = import.meta.dirname; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'package.json'))) return (templatesRoot = join(dir, 'templates'));
    if (dirname(dir) === dir) throw new TemplateInvalid(import.meta.dirname, 'no package.json above this module, so no templates/ folder');
  }
}

/** A template named relative to templates/<kind>/, or an absolute path. */
export function templatePath(kind: 'domains' | 'networks', name: string): string {
  return isAbsolute(name) ? name : join(templatesDir(), kind, name);
}

export async function loadTemplate(file: string): Promise<XmlElement> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such template' : 'cannot read the template';
    throw new TemplateInvalid(file, reason, err);
  }
  const parsed = parseXml(text);
  if ('error' in parsed) throw new TemplateInvalid(file, `not well-formed XML (${parsed.error})`);
  return parsed;
}

/** Returns a copy of the tree with every placeholder replaced; a value nobody supplied is an error. */
export function fillPlaceholders(file: string, root: XmlElement, values: TemplateValues): XmlElement {
  const fill = (text: string): string =>
    text.replace(PLACEHOLDER, (_match, name: string) => {
      const value = Object.hasOwn(values, name) ? values[name] : undefined;
      if (value === undefined) throw new TemplateValueMissing(file, name);
      return String(value);
    });
  const visit = (node: XmlNode): XmlNode =>
    typeof node === 'string'
      ? fill(node)
      : {
          name: node.name,
          attrs: Object.fromEntries(Object.entries(node.attrs).map(([k, v]) => [k, fill(v)])),
          children: node.children.map(visit),
        };
  return visit(root) as XmlElement;
}

export async function renderTemplate(file: string, values: TemplateValues): Promise<XmlElement> {
  return fillPlaceholders(file, await loadTemplate(file), values);
}
