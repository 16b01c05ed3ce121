/**
 * vmdr's labels inside libvirt's <metadata>, one element per label:
 *
 *   <metadata>
 *     <vmdr:labels xmlns:vmdr="https://vmdr.dev/xmlns/1">
 *       <vmdr:label key="protection">acme-db</vmdr:label>
 *     </vmdr:labels>
 *   </metadata>
 *
 * The key is an attribute, not the element name, because label keys need not be XML names. The
 * presence of the labels element (even empty) is also how vmdr recognises the domains and networks
 * it made: libvirt keeps one element per namespace in <metadata>, and only vmdr writes this one.
 */
import { childElements, element, ensureChild, removeChild, textElement, textOf, type XmlElement } from './xml.js';

export const VMDR_NAMESPACE = 'https://vmdr.dev/xmlns/1';
const PREFIX = 'vmdr';

export function labelsElement(labels: Record<string, string>): XmlElement {
  return element(
    `${PREFIX}:labels`,
    { [`xmlns:${PREFIX}`]: VMDR_NAMESPACE },
    Object.entries(labels).map(([key, value]) => textElement(`${PREFIX}:label`, value, { key })),
  );
}

/** Puts vmdr's labels into the <metadata> of a domain or network, replacing any earlier ones. */
export function setLabels(root: XmlElement, labels: Record<string, string>): void {
  const metadata = ensureChild(root, 'metadata');
  const existing = findLabels(root);
  if (existing) removeChild(metadata, existing);
  metadata.children.push(labelsElement(labels));
}

/** Takes vmdr's labels element out (a fence lifted from a VM vmdr did not make); true when there was one. */
export function removeLabels(root: XmlElement): boolean {
  const existing = findLabels(root);
  if (!existing) return false;
  removeChild(childElements(root, 'metadata')[0]!, existing);
  return true;
}

/** vmdr's labels, or undefined when vmdr did not make this object. */
export function readLabels(root: XmlElement): Record<string, string> | undefined {
  const el = findLabels(root);
  if (!el) return undefined;
  const prefix = el.name.includes(':') ? `${el.name.split(':')[0]}:` : '';
  return Object.fromEntries(
    childElements(el, `${prefix}label`)
      .filter((l) => l.attrs.key !== undefined)
      .map((l) => [l.attrs.key!, textOf(l) ?? '']),
  );
}

function findLabels(root: XmlElement): XmlElement | undefined {
  const metadata = childElements(root, 'metadata')[0];
  if (!metadata) return undefined;
  // Matched by namespace URI, whatever prefix the XML happens to use.
  return childElements(metadata).find((el) => {
    const [prefix, local] = el.name.includes(':') ? el.name.split(':') : [undefined, el.name];
    const ns = prefix ? el.attrs[`xmlns:${prefix}`] : el.attrs.xmlns;
    return local === 'labels' && ns === VMDR_NAMESPACE;
  });
}
