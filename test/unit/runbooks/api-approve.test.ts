/**
 * `POST /api/v1/failovers/{id}/approve` over real HTTPS: the approval a runbook's step waits for,
 * given with an operate token of the run's tenant (or an operator's); refused to a read-only
 * token, hidden from another tenant, and 409 when the run waits for nothing.
 */
import assert from 'node:assert/strict';
import { approvalOf, requestApproval } from '../../../plugin/state/approvals.js';
import { insertFailover } from '../../../plugin/state/failovers.js';
import { apiCall } from '../../helpers/api-client.js';
import { startTestApi, type TestApi } from '../../helpers/api-instance.js';

describe('approving a runbook step through the API', function () {
  this.timeout(60_000);
  let t: TestApi;

  before(async () => {
    t = await startTestApi();
  });
  after(() => t?.close());

  it('approves with an operate token of the run\'s tenant, and only then', async () => {
    const id = 'fo-20261201T120000-ab12';
    insertFailover(t.state.db, { id, kind: 'test', plan: null, request: JSON.stringify({ kind: 'test', protections: ['web-acme'] }), startedAtMs: Date.now(), failureAtMs: Date.now() });
    requestApproval(t.state.db, id, 'sign-off', 'end the drill?');
    const approve = (token: string | undefined) => apiCall(t.api.url, t.ca, `/api/v1/failovers/${id}/approve`, { method: 'POST', token: token!, body: {} });

    assert.equal((await approve(t.tokens.acmeRead)).status, 403);
    const other = await approve(t.tokens.globex);
    assert.equal(other.status, 404, other.text);
    assert.equal(approvalOf(t.state.db, id, 'sign-off')!.approvedAt, null);

    const ok = await approve(t.tokens.acme);
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.approved[0].step, 'sign-off');
    assert.match(ok.json.approved[0].by, /^token /);
    assert.ok(approvalOf(t.state.db, id, 'sign-off')!.approvedAt);

    const again = await approve(t.tokens.acme);
    assert.equal(again.status, 409);
    assert.equal(again.json.error.code, 'NOT_WAITING_FOR_APPROVAL');
  });
});
