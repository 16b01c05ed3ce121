/**
 * Reading the values the property collector returns, whose shape the server decides: an array
 * property holds one element, several, or nothing at all (absent, or an empty element).
 */
import { asArray } from './soap.js';

/** The elements of an array property, whatever came. */
export function items<T>(value: unknown): T[] {
  if (value === undefined || value === null || value === '') return [];
  return asArray(value as T | T[]);
}
