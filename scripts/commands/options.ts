/** Options every command shares, declared once. */
export interface GlobalOptions {
  config: string;
  json: boolean;
}
