/**
 * vSphere faults as vmdr's typed errors, chosen by the fault's vim25 type (the detail's xsi:type),
 * never by its text: what a call threw and what a task's info.error holds map the same way. The
 * SoapFault itself stays as the error's `cause`.
 */
import { InvalidPowerState, VmAlreadyExists, VmNotFound, type VmdrError } from '../errors.js';
import {
  VsphereDuplicateName,
  VsphereFault,
  VsphereFileNotFound,
  VsphereInvalidRequest,
  VsphereLoginFailed,
  VsphereNotAuthenticated,
  VsphereObjectNotFound,
} from './errors.js';
import { MoRef, SoapFault } from './soap.js';

/** What the failed call was about: named in the error so one line says what failed where. */
export interface FaultContext {
  host: string;
  /** The method or the task's name (PowerOnVM_Task). */
  operation: string;
  /** The VM's name, when the call concerned one. */
  vm?: string;
  /** The login's user, for InvalidLogin. */
  user?: string;
}

/** Faults whose meaning is "the request itself is wrong", subtypes included. */
const INVALID_REQUEST = new Set(['InvalidArgument', 'InvalidRequest', 'InvalidProperty', 'InvalidType', 'MethodNotFound', 'InvalidCollectorVersion']);

export function isNotAuthenticated(fault: unknown): boolean {
  return fault instanceof SoapFault && fault.faultType === 'NotAuthenticated';
}

export function errorOfFault(fault: SoapFault, context: FaultContext): VmdrError {
  const { host, operation, vm } = context;
  const detail = fault.detail;
  switch (fault.faultType) {
    case 'InvalidPowerState': {
      const existing = typeof detail.existingState === 'string' ? detail.existingState : 'in another power state';
      const requested = typeof detail.requestedState === 'string' ? detail.requestedState : undefined;
      const wanted = requested === existing ? `${operation} cannot make it ${requested} again` : `${operation} cannot run in that state`;
      return new InvalidPowerState(vm ?? 'unknown', host, existing, wanted, fault);
    }
    case 'ManagedObjectNotFound': {
      const obj = detail.obj instanceof MoRef ? detail.obj : undefined;
      if (obj?.type === 'VirtualMachine' || (!obj && vm)) return new VmNotFound(vm ?? obj!.value, host, fault);
      return new VsphereObjectNotFound(obj?.type ?? 'object', obj?.value ?? fault.message, host, fault);
    }
    case 'NotFound':
      return vm ? new VmNotFound(vm, host, fault) : new VsphereObjectNotFound('object', fault.message, host, fault);
    case 'InvalidLogin':
      return new VsphereLoginFailed(host, context.user ?? '', fault);
    case 'NotAuthenticated':
      return new VsphereNotAuthenticated(host, operation, { cause: fault });
    case 'DuplicateName': {
      const name = typeof detail.name === 'string' ? detail.name : fault.message;
      const existing = detail.object instanceof MoRef ? detail.object : undefined;
      return existing?.type === 'VirtualMachine' ? new VmAlreadyExists(name, host, fault) : new VsphereDuplicateName(name, host, fault);
    }
    case 'FileNotFound':
      return new VsphereFileNotFound(typeof detail.file === 'string' ? detail.file : fault.message, host, fault);
  }
  if (INVALID_REQUEST.has(fault.faultType)) {
    const property = typeof detail.invalidProperty === 'string' ? detail.invalidProperty : typeof detail.name === 'string' ? detail.name : undefined;
    const what = [fault.faultType, property && `property ${property}`, fault.message !== fault.faultType && fault.message].filter(Boolean).join(', ');
    return new VsphereInvalidRequest(host, operation, what, vm ? { vm } : {}, fault);
  }
  return new VsphereFault(fault.faultType, host, operation, fault.message === fault.faultType ? '' : fault.message, vm ? { vm } : {}, fault);
}
