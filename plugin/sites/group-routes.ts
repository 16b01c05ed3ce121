/**
 * The group steps on a source site's endpoint (group-protocol.ts): the members of a consistency
 * group that are on this site, driven by the group's coordinating site. Only that site may ask
 * (its pinned certificate), only for a group of this site's own config whose members here are the
 * ones it names; the members' cycles run here, with this host's hypervisor, state and receiver
 * clients (group-host.ts), and ship to the DR site from here.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { VmdrError } from '../../hypervisors/errors.js';
import { coordinatorSite } from '../config/consistency-groups.js';
import type { Config, ConsistencyGroup, Protection } from '../config/schema.js';
import { ProtectionPaused } from '../replication/errors.js';
import { errorOf, GroupWindowAborted, HostMembers, membersDown } from '../replication/group-host.js';
import { PROTECTION_UNKNOWN, ReceiverRefused } from '../replication/receiver/errors.js';
import { publicError } from '../replication/receiver/answers.js';
import { receiverFor } from '../replication/sender/connect.js';
import type { ReceiverClient } from '../replication/sender/receiver-client.js';
import { pauseOf } from '../state/pauses.js';
import type { StateStore } from '../state/store.js';
import { SiteConnections } from './connections.js';
import { GroupDownBody, GroupJoinBody, GroupStepBody, GROUP_PREFIX, type GroupDownAnswer, type GroupHoldAnswer, type GroupReleaseAnswer } from './group-protocol.js';
import { answerStreamed } from './ndjson.js';
import { requirePeer } from './peer-auth.js';

interface Deps {
  config: Config;
  file: string;
  site: string;
  state?: StateStore;
}

type GroupRequest = FastifyRequest<{ Params: { group: string } }>;

export function registerGroupRoutes(app: FastifyInstance, deps: Deps): void {
  /** The cycles under way here, by group instant. */
  const cycles = new Map<string, HostMembers>();

  /** The group and its members on this site, when the caller is the group's coordinating site and names them alike. */
  const groupOf = (req: GroupRequest, named: string[]): { group: ConsistencyGroup; members: Protection[]; coordinator: string } => {
    const unknown = () => new ReceiverRefused(PROTECTION_UNKNOWN, `site "${deps.site}" has no consistency group "${req.params.group}" with members on it`, 404);
    const group = deps.state ? deps.config.consistencyGroups.find((g) => g.name === req.params.group) : undefined;
    if (!group) throw unknown();
    const all = group.protections.map((m) => deps.config.protections.find((p) => p.name === m)!);
    const members = all.filter((p) => p.source.site === deps.site);
    if (members.length === 0) throw unknown();
    const coordinator = coordinatorSite(group, all);
    requirePeer(req, coordinator, unknown);
    const here = members.map((p) => p.name);
    if (here.length !== named.length || here.some((m) => !named.includes(m))) {
      throw new ReceiverRefused('GROUP_MEMBERS_DIFFER', `site "${deps.site}" has members ${here.join(', ')} of group "${group.name}", and the coordinating site named ${named.join(', ')}: the two configs differ`, 409);
    }
    return { group, members, coordinator };
  };
  const cycleOf = (req: GroupRequest, instant: string): HostMembers => {
    const cycle = cycles.get(instant);
    if (!cycle || cycle.group.name !== req.params.group) throw new ReceiverRefused('GROUP_CYCLE_UNKNOWN', `site "${deps.site}" runs no cycle ${instant} of group "${req.params.group}" (it ended, or the window was closed)`, 409);
    requirePeer(req, coordinatorSite(cycle.group, deps.config.protections), () => new ReceiverRefused(PROTECTION_UNKNOWN, 'no such group cycle', 404));
    return cycle;
  };
  /** A step the cycle here cannot take any more (its window closed) is the caller's to know, by code. */
  const step = async <T>(work: () => Promise<T>): Promise<T> =>
    work().catch((err: unknown) => {
      throw err instanceof VmdrError && err.code === 'GROUP_WINDOW_ABORTED' ? new ReceiverRefused(err.code, err.message, 409) : err;
    });

  const sites = new SiteConnections(deps.config, deps.file);
  app.addHook('onClose', () => sites.close());

  app.post(`${GROUP_PREFIX}/:group/down`, async (req) => {
    const { members: named } = GroupDownBody.parse(req.body);
    const { group, members } = groupOf(req as GroupRequest, named);
    return { down: await membersDown(sites, deps.site, members) } satisfies GroupDownAnswer;
  });

  app.post(`${GROUP_PREFIX}/:group/join`, (req, reply) => {
    const { instant, members: named } = GroupJoinBody.parse(req.body);
    const { group, members, coordinator } = groupOf(req as GroupRequest, named);
    if (!instant.startsWith(`${group.name}@`)) throw new ReceiverRefused('BAD_REQUEST', `instant "${instant}" is not one of group "${group.name}"`, 400);
    if (cycles.has(instant)) throw new ReceiverRefused('GROUP_CYCLE_BUSY', `site "${deps.site}" already runs cycle ${instant}`, 409);
    for (const p of members) {
      const held = pauseOf(deps.state!.db, p.name);
      if (held) throw new ReceiverRefused('PROTECTION_PAUSED', new ProtectionPaused(p.name, held.pausedBy, held.pausedAt).message, 409, { protection: p.name });
    }
    reply.hijack();
    void answerStreamed(reply.raw, {
      waiting: () => ({ phase: 'waiting', done: 0, total: 1, subject: { protection: members[0]!.name }, detail: `source site ${deps.site}: group ${group.name}, cycle ${instant}` }),
      gone: () => new GroupWindowAborted(group.name, `the coordinating site "${coordinator}" left the cycle`),
      errorLine: (err) => ({ error: err instanceof VmdrError ? publicError(err) : errorOf(err), userError: err instanceof VmdrError ? err.userError : false }),
      work: async ({ signal, onNotice, onProgress }) => {
        const connections = new SiteConnections(deps.config, deps.file);
        const receivers = new Map<string, ReceiverClient>();
        try {
          for (const p of members) receivers.set(p.name, await receiverFor(deps.config, deps.file, p));
          // The member's own cycle is not cut when the coordinator leaves after the window: its point is still a point.
          const host = new HostMembers(group, deps.site, members, { sites: connections, state: deps.state!, receiverOf: (p) => receivers.get(p.name)! }, instant, { onProgress });
          cycles.set(instant, host);
          const leave = () => host.abort(signal.reason as Error);
          if (signal.aborted) leave();
          signal.addEventListener('abort', leave, { once: true });
          try {
            await host.arrive();
            onNotice({ arrived: true });
          } catch (err) {
            host.abort(new GroupWindowAborted(group.name, `a member failed before the window: ${(err as Error).message}`));
            await host.outcomes();
            throw err;
          }
          return { members: await host.outcomes() };
        } finally {
          cycles.delete(instant);
          for (const r of receivers.values()) r.close();
          await connections.close();
        }
      },
    });
  });

  app.post(`${GROUP_PREFIX}/:group/hold`, async (req) => {
    const cycle = cycleOf(req as GroupRequest, GroupStepBody.parse(req.body).instant);
    return { notHeld: await step(() => cycle.hold()) } satisfies GroupHoldAnswer;
  });
  app.post(`${GROUP_PREFIX}/:group/begin`, async (req) => {
    const cycle = cycleOf(req as GroupRequest, GroupStepBody.parse(req.body).instant);
    await step(() => cycle.begin());
    return {};
  });
  app.post(`${GROUP_PREFIX}/:group/release`, async (req) => {
    const cycle = cycleOf(req as GroupRequest, GroupStepBody.parse(req.body).instant);
    return { warnings: await step(() => cycle.release()) } satisfies GroupReleaseAnswer;
  });
}
