/**
 * The one substitution an HTTP body knows: ${run.id}, ${run.kind} and ${plan}, replaced by text.
 * Nothing is evaluated; anything else between ${ and } is refused when the runbook is loaded, so
 * a typo is found by `vmdr runbook check`, not in the middle of a failover.
 */

export interface TemplateValues {
  'run.id': string;
  'run.kind': string;
  plan: string;
}

export const TEMPLATE_VARIABLES: readonly (keyof TemplateValues)[] = ['run.id', 'run.kind', 'plan'];

const PLACEHOLDER = /\$\{([^}]*)\}/g;

/** What is wrong with a template, in the words of a field's message; undefined when it is fine. */
export function templateProblem(text: string): string | undefined {
  const known = TEMPLATE_VARIABLES.map((v) => `\${${v}}`).join(', ');
  for (const [, variable] of text.matchAll(PLACEHOLDER)) {
    if (!(TEMPLATE_VARIABLES as readonly string[]).includes(variable!)) return `unknown variable \${${variable}}: a template knows ${known}`;
  }
  const open = text.replace(PLACEHOLDER, '').indexOf('${');
  if (open >= 0) return `"\${" without its closing "}": a template knows ${known}`;
  return undefined;
}

export function fillTemplate(text: string, values: TemplateValues): string {
  return text.replace(PLACEHOLDER, (_, variable: keyof TemplateValues) => values[variable]);
}
