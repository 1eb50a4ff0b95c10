/**
 * `cvmfs-ts talk [-i FQRN | -p SOCKET] COMMAND...`, as cvmfs_talk: sends one command to the control
 * socket of a running mount (src/client/talk.ts) and prints the answer. Without -i/-p, or with
 * `-i '*'`, every mounted repository is asked in turn, each answer after a `<fqrn>:` line.
 *
 * Finding the socket of FQRN: first where its configuration puts it (`<cache dir>/cvmfs_io.<fqrn>`,
 * read from --config-root / $CVMFS_TS_CONFIG_ROOT / /etc/cvmfs), then what the mounts of FQRN name in
 * their `user.talk_socket` xattr (a mount configured elsewhere, a second mount on one cache).
 * Exit status 1 when a socket cannot be reached or the daemon answers `unknown command`.
 */
import type { Command } from '@commander-js/extra-typings';
import { loadConfig } from '../config/bash-config';
import { parseSettings } from '../config/parameters';
import { sendTalkCommand, talkSocketPath, TalkUnavailableError, UNKNOWN_COMMAND } from '../client/talk';
import { CvmfsError, describeError } from '../errors';
import { mountedInstances } from './instances';

export interface TalkOptions {
  instance?: string;
  socket?: string;
  configRoot?: string;
}

/** Candidate sockets of a repository, most likely first, without duplicates. */
async function socketsOf(fqrn: string, configRoot: string | undefined): Promise<string[]> {
  const candidates: string[] = [];
  try {
    const settings = parseSettings(await loadConfig(fqrn, { root: configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT }));
    candidates.push(talkSocketPath(settings.cacheDir, fqrn));
  } catch {
    // not configured here: the mounts may still name it
  }
  for (const i of await mountedInstances()) if (i.fqrn === fqrn && i.talkSocket) candidates.push(i.talkSocket);
  return [...new Set(candidates)];
}

/** The answer of the first candidate that listens; a refused permission is final. */
async function ask(sockets: readonly string[], command: string, what: string): Promise<string> {
  let last: unknown;
  for (const socket of sockets) {
    try {
      return await sendTalkCommand(socket, command);
    } catch (e) {
      if (!(e instanceof TalkUnavailableError) || e.reason === 'EACCES') throw e;
      last = e;
    }
  }
  throw new CvmfsError('E_UNAVAILABLE', `${what} is not running${last ? ` (${describeError(last)})` : ' (no control socket found)'}`);
}

export async function runTalk(words: readonly string[], o: TalkOptions, out: (text: string) => void = (t) => process.stdout.write(t)): Promise<void> {
  const command = words.join(' ');
  if (o.socket) {
    report(await ask([o.socket], command, `no mount at ${o.socket}`), out);
  } else if (o.instance && o.instance !== '*') {
    report(await ask(await socketsOf(o.instance, o.configRoot), command, `${o.instance}`), out);
  } else {
    for (const i of await mountedInstances()) {
      out(`${i.fqrn}:\n`);
      try {
        report(await ask(i.talkSocket ? [i.talkSocket] : [], command, `${i.fqrn} on ${i.mountpoint}`), out);
      } catch (e) {
        process.stderr.write(`cvmfs-ts: ${describeError(e)}\n`);
        process.exitCode = 1;
      }
    }
  }
}

function report(answer: string, out: (text: string) => void): void {
  out(answer);
  if (answer === UNKNOWN_COMMAND) process.exitCode = 1;
}

export function registerTalkCommand(program: Command): void {
  program
    .command('talk')
    .description("send a command to a mounted repository's control socket and print the answer (as cvmfs_talk)")
    .argument('<command...>', 'the command, see below')
    .option('-i, --instance <fqrn>', "the repository ('*' or none: every mounted one)")
    .option('-p, --socket <path>', 'the control socket itself')
    .option('--config-root <dir>', 'configuration root instead of /etc/cvmfs (or $CVMFS_TS_CONFIG_ROOT)')
    .addHelpText(
      'after',
      [
        '\nCommands:',
        '  cache size | cache list [pinned|catalogs] | cleanup <MB> | evict <path> | pin <path>',
        '  remount [sync] | revision | open catalogs | reset error counters',
        '  host info | host switch | host set <url;url…> | proxy info | proxy set <proxies>',
        '  timeout info | timeout set <proxy s> <direct s> | mountpoint | pid | version | parameters',
      ].join('\n'),
    )
    .action((words, o) => runTalk(words, o));
}
