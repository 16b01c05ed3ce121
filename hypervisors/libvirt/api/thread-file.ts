import { Worker } from 'node:worker_threads';

/**
 * Starts a sibling module as a worker thread: the .js file in dist/, or under tsx (tests, benches)
 * the .ts file, through tsx's loader, which a worker thread does not inherit.
 */
export function startThread(name: string, base: string): Worker {
  if (!base.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, base));
  const entry = JSON.stringify(new URL(`./${name}.ts`, base).href);
  return new Worker(`import('tsx/esm/api').then(({ register }) => { register(); return import(${entry}); });`, { eval: true });
}
