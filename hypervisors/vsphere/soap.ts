/**
 * SOAP 1.1 envelopes of vSphere's Web Services API (urn:vim25), built and parsed with
 * fast-xml-parser: every value a user typed is escaped by the library, never written into markup.
 *
 * Arguments are plain objects whose key order is the WSDL's element order (vCenter checks it):
 *   - `{ _type: 'VirtualE1000', … }` is a data object of that type (`xsi:type="VirtualE1000"`);
 *   - `{ _type: 'xsd:string', _value: 'x' }` is a typed primitive, where the WSDL says anyType
 *     (an OptionValue's value);
 *   - a MoRef (`moRef(type, value)`, or any MoRef this module parsed) is `<x type="T">value</x>`;
 *   - an array repeats its element; undefined and null are left out; numbers, booleans and Dates
 *     are written as XML Schema writes them.
 * Parsed answers mirror that: objects keep their xsi:type as `_type`, MoRefs are MoRef instances
 * (`{ type, value }`), numbers and booleans stay strings, one-or-many is whatever came (asArray).
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';

/** A managed object reference: what a vSphere object is called on the wire. */
export class MoRef {
  constructor(
    readonly type: string,
    readonly value: string,
  ) {}

  toString(): string {
    return `${this.type}:${this.value}`;
  }
}

export function moRef(type: string, value: string): MoRef {
  return new MoRef(type, value);
}

export function asArray<T>(x: T | T[] | undefined | null): T[] {
  if (x === undefined || x === null) return [];
  return Array.isArray(x) ? x : [x];
}

/**
 * A SOAP fault as the server sent it (or a task's LocalizedMethodFault): its vim25 type (the
 * detail's xsi:type), the server's message and the fault's fields. faults.ts maps it to vmdr's
 * errors and keeps it as their `cause`.
 */
export class SoapFault extends Error {
  constructor(
    readonly faultType: string,
    message: string,
    readonly detail: Record<string, unknown>,
  ) {
    super(message || faultType);
    this.name = 'SoapFault';
  }
}

/** A value that XML cannot carry (a control character) or a key that is not an element name. */
export class SoapValueInvalid extends Error {
  constructor(readonly path: string, detail: string) {
    super(`${path}: ${detail}`);
    this.name = 'SoapValueInvalid';
  }
}

/** The answer is not a SOAP envelope of the kind asked for. */
export class SoapAnswerMalformed extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'SoapAnswerMalformed';
  }
}

const NS_SOAPENV = 'http://schemas.xmlsoap.org/soap/envelope/';
const NS_XSD = 'http://www.w3.org/2001/XMLSchema';
const NS_XSI = 'http://www.w3.org/2001/XMLSchema-instance';
const ATTR = '@_';
const TEXT = '#text';

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: ATTR,
  textNodeName: TEXT,
  suppressEmptyNode: false,
  suppressBooleanAttributes: false,
  processEntities: true,
});

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: ATTR,
  textNodeName: TEXT,
  // Strings stay strings: "0042", "1e3", "true" are the caller's to convert.
  parseTagValue: false,
  parseAttributeValue: false,
  // A VM's name may begin or end with spaces.
  trimValues: false,
  processEntities: true,
  // Also decodes numeric character references (&#34;), which Go's encoder (the simulator) writes.
  htmlEntities: true,
  removeNSPrefix: false,
  ignoreDeclaration: true,
  ignorePiTags: true,
});

/** XML 1.0 cannot carry these, escaped or not. */
const NOT_XML = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
const ELEMENT_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** The request envelope for `method` on `thisRef`. */
export function buildRequest(method: string, thisRef: { type: string; value: string }, args: object = {}): string {
  if (!ELEMENT_NAME.test(method)) throw new SoapValueInvalid(method, 'not a method name');
  const body: Record<string, unknown> = { [`${ATTR}xmlns`]: 'urn:vim25', _this: encodeRef(thisRef, '_this') };
  for (const [key, value] of Object.entries(args)) {
    const encoded = encode(value, `${method}.${key}`);
    if (encoded !== undefined) body[checkedName(key, method)] = encoded;
  }
  return builder.build({
    'soapenv:Envelope': {
      [`${ATTR}xmlns:soapenv`]: NS_SOAPENV,
      [`${ATTR}xmlns:xsd`]: NS_XSD,
      [`${ATTR}xmlns:xsi`]: NS_XSI,
      'soapenv:Body': { [method]: body },
    },
  }) as string;
}

function checkedName(key: string, path: string): string {
  if (!ELEMENT_NAME.test(key) || (key.startsWith('_') && key !== '_this')) throw new SoapValueInvalid(`${path}.${key}`, 'not an element name');
  return key;
}

function encodeRef(ref: { type: string; value: string }, path: string): Record<string, string> {
  return { [`${ATTR}type`]: text(ref.type, `${path}@type`), [TEXT]: text(ref.value, path) };
}

function text(value: string, path: string): string {
  if (NOT_XML.test(value)) throw new SoapValueInvalid(path, 'holds a character XML cannot carry');
  return value;
}

function encode(value: unknown, path: string): unknown {
  if (value === undefined || value === null) return undefined;
  if (value instanceof MoRef) return encodeRef(value, path);
  if (Array.isArray(value)) {
    const items = value.map((item, i) => encode(item, `${path}[${i}]`)).filter((item) => item !== undefined);
    if (items.some(Array.isArray)) throw new SoapValueInvalid(path, 'an array of arrays has no XML form');
    return items;
  }
  if (typeof value === 'string') return text(value, path);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new SoapValueInvalid(path, `${value} is not a number XML Schema knows`);
    return String(value);
  }
  if (typeof value === 'bigint' || typeof value === 'boolean') return String(value);
  if (value instanceof Date) return value.toISOString();
  if (typeof value !== 'object') throw new SoapValueInvalid(path, `a ${typeof value} has no XML form`);

  const object = value as Record<string, unknown>;
  const element: Record<string, unknown> = {};
  if (object._type !== undefined) element[`${ATTR}xsi:type`] = text(String(object._type), `${path}._type`);
  if ('_value' in object) {
    element[TEXT] = encode(object._value, `${path}._value`) ?? '';
    return element;
  }
  for (const [key, child] of Object.entries(object)) {
    if (key === '_type') continue;
    const encoded = encode(child, `${path}.${key}`);
    if (encoded !== undefined) element[checkedName(key, path)] = encoded;
  }
  return element;
}

/**
 * The `returnval` of `method`'s answer (undefined for a method that returns nothing, an array when
 * it returned several), or the SoapFault the server answered with, thrown.
 */
export function parseResponse(method: string, xml: string): unknown {
  // SOAP forbids a DTD; refusing it keeps entity expansion out of the parser's reach.
  if (/<!DOCTYPE/i.test(xml)) throw new SoapAnswerMalformed('the answer holds a DTD');
  let document: Record<string, unknown>;
  try {
    document = parser.parse(xml, true) as Record<string, unknown>;
  } catch (cause) {
    throw new SoapAnswerMalformed(`not well-formed XML (${(cause as Error).message})`);
  }
  const envelope = child(document, 'Envelope');
  const body = envelope && child(envelope, 'Body');
  if (!body) throw new SoapAnswerMalformed('no SOAP envelope');
  const fault = child(body, 'Fault');
  if (fault) throw faultOf(fault);
  const response = child(body, `${method}Response`);
  if (!response) throw new SoapAnswerMalformed(`no ${method}Response in the answer`);
  const returned = childValue(response, 'returnval');
  if (returned === undefined) return undefined;
  return Array.isArray(returned) ? returned.map(decode) : decode(returned);
}

/** A task's `info.error` (LocalizedMethodFault) as the same SoapFault a call would have thrown. */
export function faultOfTaskError(error: unknown): SoapFault {
  const localized = (error ?? {}) as { fault?: Record<string, unknown>; localizedMessage?: string };
  const { _type, ...detail } = localized.fault ?? {};
  return new SoapFault(typeof _type === 'string' ? _type : 'MethodFault', localized.localizedMessage ?? '', detail);
}

function faultOf(fault: Record<string, unknown>): SoapFault {
  const faultstring = decode(childValue(fault, 'faultstring'));
  const faultcode = decode(childValue(fault, 'faultcode'));
  const detail = child(fault, 'detail');
  const [name, node] = detail ? (elementEntries(detail)[0] ?? []) : [];
  const message = typeof faultstring === 'string' ? faultstring : '';
  if (name === undefined || node === undefined) return new SoapFault(typeof faultcode === 'string' ? faultcode : 'SoapFault', message, {});
  const decoded = decode(node);
  const { _type, ...fields } = typeof decoded === 'object' && decoded !== null && !(decoded instanceof MoRef) ? (decoded as Record<string, unknown>) : {};
  const type = typeof _type === 'string' ? _type : localName(name).replace(/Fault$/, '');
  return new SoapFault(type, message, fields);
}

function localName(name: string): string {
  return name.slice(name.indexOf(':') + 1);
}

function elementEntries(node: Record<string, unknown>): [string, unknown][] {
  return Object.entries(node).filter(([key]) => !key.startsWith(ATTR) && key !== TEXT);
}

function childValue(node: Record<string, unknown>, name: string): unknown {
  return elementEntries(node).find(([key]) => localName(key) === name)?.[1];
}

function child(node: Record<string, unknown>, name: string): Record<string, unknown> | undefined {
  const value = childValue(node, name);
  const first = Array.isArray(value) ? value[0] : value;
  return typeof first === 'object' && first !== null ? (first as Record<string, unknown>) : undefined;
}

/** The xsi:type of a parsed element: an attribute `prefix:type` (a MoRef's own `type` has no prefix). */
function xsiTypeOf(node: Record<string, unknown>): string | undefined {
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith(ATTR) && /^[^:]+:type$/.test(key.slice(ATTR.length))) return String(value);
  }
  return undefined;
}

function isPrimitiveType(type: string): boolean {
  return /^xsd?:/.test(type);
}

function decode(node: unknown): unknown {
  if (typeof node !== 'object' || node === null) return node;
  const element = node as Record<string, unknown>;
  const xsiType = xsiTypeOf(element);
  const refType = element[`${ATTR}type`];
  const children = elementEntries(element);
  const ownText = typeof element[TEXT] === 'string' ? (element[TEXT] as string) : '';
  if (children.length === 0) {
    if (typeof refType === 'string' && (!xsiType || localName(xsiType) === 'ManagedObjectReference')) return new MoRef(refType, ownText);
    if (!xsiType || isPrimitiveType(xsiType) || ownText !== '') return ownText;
    return localName(xsiType).startsWith('ArrayOf') ? [] : { _type: localName(xsiType) };
  }
  if (xsiType && localName(xsiType).startsWith('ArrayOf')) {
    return children.flatMap(([, value]) => asArray(value).map(decode));
  }
  const object: Record<string, unknown> = xsiType ? { _type: localName(xsiType) } : {};
  for (const [key, value] of children) object[localName(key)] = Array.isArray(value) ? value.map(decode) : decode(value);
  return object;
}
