/**
 * The control socket of a mount, as cvmfs's talk socket (§5.15): a unix socket on which the daemon
 * reads one command line, writes the answer and closes the connection. The commands themselves are
 * MountControl's (control.ts); this module is the transport, both ends.
 *
 * Where: `<cache dir>/cvmfs_io.<fqrn>`, the path cvmfs_talk computes from the configuration
 * (CVMFS_CACHE_DIR, else CVMFS_CACHE_BASE + /shared or /<fqrn>). If a live daemon already answers
 * there (the same repository mounted twice on one cache directory), ours is `cvmfs_io.<fqrn>.<pid>`.
 * The daemon also names its socket in the magic xattr `user.talk_socket`, so a client that does not
 * know the configuration (a private cache base) finds it through the mount.
 *
 * Who may talk: the socket file has mode 0600 and belongs to the daemon's user (root): Linux needs
 * write permission on a socket file to connect to it, so every other user gets EACCES. Node cannot
 * read SO_PEERCRED, so this file mode is the whole check. The socket is bound inside a fresh 0700
 * directory, chmod-ed, then renamed into place: it is never reachable with a wider mode, and the
 * rename atomically replaces a stale socket left by a killed daemon.
 *
 * Protocol (compatible with cvmfs_talk): the first chunk the client sends is the command (a trailing
 * newline or NUL is dropped); the answer is text, ended by closing the connection.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { chmod, mkdtemp, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { CvmfsError, describeError } from '../errors';

/** The answer to a command the daemon does not know (the talk client exits non-zero on it). */
export const UNKNOWN_COMMAND = 'unknown command\n';
/** cvmfs reads at most this much per command. */
const MAX_COMMAND_BYTES = 4096;
/** A client that connects but sends nothing is dropped after this long. */
const IDLE_MS = 10_000;

export function talkSocketPath(cacheDir: string, fqrn: string): string {
  return join(cacheDir, `cvmfs_io.${fqrn}`);
}

/** Answers one command line with text (ending in a newline). */
export type TalkHandler = (command: string) => Promise<string>;

/** A talk socket that cannot be reached: `reason` is the errno code (ENOENT, ECONNREFUSED, EACCES, …). */
export class TalkUnavailableError extends CvmfsError {
  constructor(
    readonly path: string,
    readonly reason: string,
    cause: unknown,
  ) {
    const why =
      reason === 'ENOENT' || reason === 'ECONNREFUSED'
        ? 'no daemon listens there (is the repository mounted?)'
        : reason === 'EACCES'
          ? 'permission denied (only the daemon’s user, root, may use it)'
          : describeError(cause);
    super('E_UNAVAILABLE', `control socket ${path}: ${why}`, { cause });
  }
}

export class TalkServer {
  private constructor(
    /** Where clients connect. */
    readonly path: string,
    private readonly server: Server,
    private readonly inode: number,
    private readonly connections: ReadonlySet<Socket>,
  ) {}

  /** Listens at `path` (or `path.<pid>` if a live daemon owns it); see the module comment. */
  static async start(path: string, handle: TalkHandler): Promise<TalkServer> {
    const target = (await isAnswering(path)) ? `${path}.${process.pid}` : path;
    const connections = new Set<Socket>();
    const server = createServer((socket) => {
      connections.add(socket);
      socket.once('close', () => connections.delete(socket));
      serve(socket, handle);
    });
    const privateDir = await mkdtemp(join(dirname(target), '.talk-')); // 0700: nobody else reaches the socket yet
    try {
      const bound = join(privateDir, 'socket');
      await new Promise<void>((done, fail) => {
        server.once('error', fail);
        server.listen(bound, () => (server.off('error', fail), done()));
      });
      await chmod(bound, 0o600);
      await rename(bound, target);
    } catch (e) {
      server.close();
      throw new CvmfsError('E_IO', `cannot create the control socket ${target}: ${describeError(e)}`, { cause: e });
    } finally {
      await rm(privateDir, { recursive: true, force: true });
    }
    return new TalkServer(target, server, (await stat(target)).ino, connections);
  }

  /** Stops listening, drops open connections, removes the socket unless another daemon replaced it. */
  async close(): Promise<void> {
    const closed = new Promise<void>((done) => this.server.close(() => done()));
    for (const c of this.connections) c.destroy();
    await closed;
    const s = await stat(this.path).catch(() => undefined);
    if (s?.ino === this.inode) await unlink(this.path).catch(() => undefined);
  }
}

function serve(socket: Socket, handle: TalkHandler): void {
  socket.on('error', () => undefined); // a client that went away: nothing to tell anyone
  socket.setTimeout(IDLE_MS, () => socket.destroy());
  socket.once('data', (chunk: Buffer) => {
    socket.setTimeout(0); // a command may take long (remount sync, pin of a big file)
    socket.pause();
    if (chunk.length > MAX_COMMAND_BYTES) {
      socket.end('command too long\n');
      return;
    }
    const command = chunk.toString('utf8').replace(/[\n\0]+$/, '').trim();
    void handle(command)
      .catch((e: unknown) => `Failed: ${describeError(e)}\n`)
      .then((answer) => socket.end(answer));
  });
}

/** Whether a daemon accepts connections at `path` (it closes our empty connection at once). */
function isAnswering(path: string): Promise<boolean> {
  return new Promise((done) => {
    const socket = createConnection(path);
    socket.once('connect', () => (socket.destroy(), done(true)));
    socket.once('error', () => done(false));
  });
}

/** Sends one command to the talk socket at `path` and returns the whole answer. */
export function sendTalkCommand(path: string, command: string, timeoutMs = 300_000): Promise<string> {
  return new Promise((done, fail) => {
    const socket = createConnection(path);
    const parts: Buffer[] = [];
    socket.setTimeout(timeoutMs, () => socket.destroy(Object.assign(new Error(`no answer within ${timeoutMs / 1000} s`), { code: 'ETIMEDOUT' })));
    socket.once('connect', () => socket.write(`${command}\n`));
    socket.on('data', (d: Buffer) => parts.push(d));
    socket.once('end', () => done(Buffer.concat(parts).toString('utf8')));
    socket.once('error', (e: NodeJS.ErrnoException) => fail(new TalkUnavailableError(path, e.code ?? 'EIO', e)));
  });
}
