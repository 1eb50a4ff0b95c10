/**
 * Before a thin image's layers are stacked (`thin mount`, the snapshotter's Prepare), the mount
 * daemons of its repositories are asked, over their control sockets, to
 *
 * - attach the nested catalogs of all its layers at once (`prefetch catalogs`): overlayfs would
 *   otherwise look into the layers one after the other, one catalog download per round trip;
 * - start prefetching the image's access profile in the background (`prefetch profile`), if
 *   thin.json names one.
 *
 * The socket is found through the mount (`user.talk_socket`), so any daemon configuration works.
 * Best effort: a daemon that cannot be asked (no socket, an older cvmfs-ts, the C++ client) only
 * costs speed, never the mount; what happened is reported to `log`.
 */
import { getAttribute } from '@napi-rs/xattr';
import { join } from 'node:path';
import { describeError } from '../errors';
import { sendTalkCommand } from '../client/talk';
import type { ThinImage } from '../image/thin-json';

/** A talk command must fit into what the daemon reads at once (talk.ts: 4096 bytes). */
const MAX_COMMAND_BYTES = 4000;

export interface WarmUpOptions {
  readonly cvmfsRoot: string;
  readonly log?: (line: string) => void;
  /** Sends one command to the daemon serving `mountpoint`; default: through its user.talk_socket. */
  readonly talk?: (mountpoint: string, command: string) => Promise<string>;
}

/** Asks the daemons; resolves when the catalogs are attached and the profile's prefetch is queued. */
export async function warmUpThinImage(image: ThinImage, o: WarmUpOptions): Promise<void> {
  const talk = o.talk ?? sendTalkThroughMount;
  const log = o.log ?? (() => undefined);
  const ask = (repository: string, command: string): Promise<void> =>
    talk(join(o.cvmfsRoot, repository), command).then(
      (answer) => log(`${repository}: ${command.split(' ').slice(0, 2).join(' ')}: ${answer.trim()}`),
      (e: unknown) => log(`${repository}: ${command.split(' ').slice(0, 2).join(' ')} not done: ${describeError(e)}`),
    );
  const work: Promise<void>[] = [];
  if (image.profile) work.push(ask(image.profile.repository, `prefetch profile ${image.profile.path}`));
  const byRepository = new Map<string, string[]>();
  for (const l of image.layers) byRepository.set(l.repository, [...(byRepository.get(l.repository) ?? []), l.path]);
  for (const [repository, paths] of byRepository) {
    for (const batch of batches(paths, 'prefetch catalogs'.length)) work.push(ask(repository, `prefetch catalogs ${batch.join(' ')}`));
  }
  await Promise.all(work);
}

/** Splits `paths` into space-joined groups that keep each command under MAX_COMMAND_BYTES. */
function batches(paths: readonly string[], prefixBytes: number): string[][] {
  const out: string[][] = [];
  let current: string[] = [];
  let bytes = prefixBytes;
  for (const p of paths) {
    const n = Buffer.byteLength(p) + 1;
    if (current.length > 0 && bytes + n > MAX_COMMAND_BYTES) {
      out.push(current);
      current = [];
      bytes = prefixBytes;
    }
    current.push(p);
    bytes += n;
  }
  if (current.length > 0) out.push(current);
  return out;
}

/** Sends a command to the daemon serving `mountpoint`, found through its user.talk_socket xattr. */
export async function sendTalkThroughMount(mountpoint: string, command: string): Promise<string> {
  const socket = (await getAttribute(mountpoint, 'user.talk_socket'))?.toString();
  if (!socket) throw new Error(`${mountpoint} names no control socket (user.talk_socket)`);
  return sendTalkCommand(socket, command, 60_000);
}
