/**
 * libvirt XML as a small element tree. Every XML vmdr sends to libvirt is built from this tree by
 * fast-xml-parser's builder, so names, paths and labels a user typed are escaped by the library,
 * never concatenated into markup. Order is preserved because libvirt hands back what we give it and
 * a reader comparing the two should find them in the same order.
 */
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';

export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
}

export type XmlNode = XmlElement | string;

/** fast-xml-parser's ordered form: one key naming the tag (or '#text'), attributes under ':@'. */
type OrderedNode = Record<string, unknown> & { ':@'?: Record<string, string> };

const TEXT = '#text';
const ATTRS = ':@';

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  // Values stay strings: a MAC, a UUID or "0042" must not turn into numbers on the way through.
  parseTagValue: false,
  parseAttributeValue: false,
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
});

const builder = new XMLBuilder({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  format: true,
  indentBy: '  ',
  suppressEmptyNode: true,
});

/** Returns the root element, or a message saying where the text is not well-formed XML. */
export function parseXml(text: string): XmlElement | { error: string } {
  const valid = XMLValidator.validate(text);
  if (valid !== true) return { error: `line ${valid.err.line}, column ${valid.err.col}: ${valid.err.msg}` };
  const root = (parser.parse(text) as OrderedNode[]).map(fromOrdered).find(isElement);
  return root ?? { error: 'no root element' };
}

/**
 * XML libvirt generated itself (a VM's, a network's, a checkpoint's definition): parsed without
 * parseXml's validation, a second pass over the whole text that costs as much as the parse and
 * would only ever catch a libvirt bug. The parser alone is lenient (it closes what a truncated
 * text leaves open), so what it cannot read, and a text that does not end by closing its one root
 * element, is still an error here.
 */
export function parseGeneratedXml(text: string): XmlElement | { error: string } {
  let nodes: XmlNode[];
  try {
    nodes = (parser.parse(text) as OrderedNode[]).map(fromOrdered).filter((n): n is XmlNode => n !== undefined);
  } catch (err) {
    return { error: (err as Error).message };
  }
  const roots = nodes.filter(isElement);
  const root = roots[0];
  if (!root) return { error: 'no root element' };
  if (roots.length > 1) return { error: `more than one root element (<${root.name}>, <${roots[1]!.name}>)` };
  const end = text.trimEnd();
  if (!end.endsWith(`</${root.name}>`) && !(end.endsWith('/>') && root.children.length === 0)) return { error: `the text ends before its root element <${root.name}> is closed` };
  return root;
}

/** The root of XML libvirt handed back; text that is not XML is libvirt's fault, not the user's. */
export function parseLibvirtXml(text: string, what: string): XmlElement {
  const root = parseGeneratedXml(text);
  if ('error' in root) throw new Error(`libvirt returned malformed ${what}: ${root.error}`);
  return root;
}

export function buildXml(root: XmlElement): string {
  return builder.build([toOrdered(root)]) as string;
}

export function element(name: string, attrs: Record<string, string> = {}, children: XmlNode[] = []): XmlElement {
  return { name, attrs, children };
}

/** An element holding only text: `<name>value</name>`. */
export function textElement(name: string, text: string, attrs: Record<string, string> = {}): XmlElement {
  return element(name, attrs, [text]);
}

export function isElement(node: XmlNode | undefined): node is XmlElement {
  return typeof node === 'object' && node !== null;
}

export function childElements(parent: XmlElement, name?: string): XmlElement[] {
  return parent.children.filter((c): c is XmlElement => isElement(c) && (name === undefined || c.name === name));
}

export function firstChild(parent: XmlElement, name: string): XmlElement | undefined {
  return childElements(parent, name)[0];
}

/** The first child of that name, appended (empty) when there is none. */
export function ensureChild(parent: XmlElement, name: string): XmlElement {
  const found = firstChild(parent, name);
  if (found) return found;
  const created = element(name);
  parent.children.push(created);
  return created;
}

/** Follows a path of child names: `at(domain, 'devices', 'interface')`. */
export function at(parent: XmlElement, ...path: string[]): XmlElement | undefined {
  let current: XmlElement | undefined = parent;
  for (const name of path) current = current && firstChild(current, name);
  return current;
}

export function textOf(el: XmlElement | undefined): string | undefined {
  if (!el) return undefined;
  const text = el.children.filter((c): c is string => typeof c === 'string').join('');
  return text === '' && el.children.length === 0 ? undefined : text;
}

export function removeChild(parent: XmlElement, child: XmlElement): void {
  parent.children = parent.children.filter((c) => c !== child);
}

function fromOrdered(node: OrderedNode): XmlNode | undefined {
  const name = Object.keys(node).find((k) => k !== ATTRS);
  if (name === undefined) return undefined;
  if (name === TEXT) return String(node[TEXT]);
  // Comments and processing instructions carry no meaning for libvirt; they are dropped here.
  if (name.startsWith('#') || name.startsWith('?')) return undefined;
  const children = (node[name] as OrderedNode[]).map(fromOrdered).filter((c): c is XmlNode => c !== undefined);
  return { name, attrs: { ...(node[ATTRS] ?? {}) }, children };
}

function toOrdered(node: XmlNode): OrderedNode {
  if (typeof node === 'string') return { [TEXT]: node };
  const ordered: OrderedNode = { [node.name]: node.children.map(toOrdered) };
  if (Object.keys(node.attrs).length > 0) ordered[ATTRS] = { ...node.attrs };
  return ordered;
}
