import assert from 'node:assert/strict';
import { VmNotFound, VmdrError } from '../../hypervisors/types.js';

describe('errors', () => {
  it('carry a stable code and the objects they concern', () => {
    const err = new VmNotFound('web1', 'qemu:///system');
    assert.ok(err instanceof VmdrError);
    assert.equal(err.code, 'VM_NOT_FOUND');
    assert.deepEqual(err.subject, { vm: 'web1', host: 'qemu:///system' });
    assert.equal(err.message, 'VM "web1" does not exist on qemu:///system');
    assert.equal(err.name, 'VmNotFound');
  });
});
