/**
 * What a command that only reads or writes the state file works with (tokens, the drill history):
 * the config and the state file, closed when the work ends. Commands that reach hypervisors use
 * replication-context.ts.
 */
import { loadConfig, type LoadedConfig } from '../../plugin/config/load.js';
import { StateStore } from '../../plugin/state/store.js';

export async function withState<T>(configFile: string, work: (state: StateStore, config: LoadedConfig) => Promise<T>): Promise<T> {
  const loaded = await loadConfig(configFile);
  const state = StateStore.open(loaded.config.state.path);
  try {
    return await work(state, loaded);
  } finally {
    state.close();
  }
}
