/**
 * `POST /api/v1/protections/{name}/watch/clear` over real HTTPS: an operate token of the
 * protection's tenant (or an operator's) lets the watch act again after an automatic failover;
 * refused to a read-only token, hidden from another tenant, 409 when nothing holds it.
 */
import assert from 'node:assert/strict';
import { insertFailover } from '../../../plugin/state/failovers.js';
import { listWatchEvents } from '../../../plugin/state/watch-events.js';
import { holdOf } from '../../../plugin/watch/hold.js';
import { apiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';

describe('clearing the watch through the API', function () {
  this.timeout(60_000);
  let t: TestApi;

  before(async () => {
    t = await startTestApi();
  });
  after(() => t?.close());

  it('clears with an operate token of the tenant, and only then; 409 once nothing holds it', async () => {
    const at = Date.now() - 1000;
    const request = { kind: 'unplanned', protections: ['web-acme'], watch: 'automatic', force: true };
    insertFailover(t.state.db, { id: 'fo-20261201T170000-ab12', kind: 'unplanned', plan: null, request: JSON.stringify(request), startedAtMs: at, failureAtMs: at });
    const clear = (token: string) => apiCall(t.api.url, t.ca, '/api/v1/protections/web-acme/watch/clear', { method: 'POST', token, body: {} });

    assert.equal((await clear(t.tokens.acmeRead)).status, 403);
    assert.equal((await clear(t.tokens.globex)).status, 404);
    assert.equal(holdOf(t.state, 'web-acme')?.failover, 'fo-20261201T170000-ab12');

    const ok = await clear(t.tokens.acme);
    assert.equal(ok.status, 200, ok.text);
    assert.match(ok.json.detail, /^cleared by token \S+: the watch may act again after automatic failover fo-20261201T170000-ab12$/);
    assert.equal(holdOf(t.state, 'web-acme'), undefined);
    assert.equal(listWatchEvents(t.state, { protection: 'web-acme', limit: 1 })[0]!.detail, ok.json.detail);

    const again = await clear(t.tokens.acme);
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'WATCH_NOT_HELD');
  });
});
