/**
 * The control socket's transport (src/client/talk.ts) without a mount: mode 0600 from the start,
 * one command per connection, a stale socket replaced, a live one left alone, removal on close.
 */
import t from 'tap';
import { stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { sendTalkCommand, TalkServer, TalkUnavailableError } from '../../src/client/talk';
import { tempDir } from '../helpers/repo';

/** Sends raw bytes (no newline, no half-close: as cvmfs_talk does) and reads the answer. */
function rawTalk(path: string, bytes: Buffer): Promise<string> {
  return new Promise((done, fail) => {
    const socket = createConnection(path, () => socket.write(bytes));
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    socket.on('end', () => done(answer));
    socket.on('error', fail);
  });
}

t.test('one command per connection, answered and closed', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cvmfs_io.x.example.org');
  const seen: string[] = [];
  const server = await TalkServer.start(path, async (command) => (seen.push(command), `you said ${command}\n`));
  t.teardown(() => server.close());
  t.equal(server.path, path);
  const s = await stat(path);
  t.ok(s.isSocket(), 'a socket');
  t.equal(s.mode & 0o777, 0o600, 'mode 0600');
  t.equal(await sendTalkCommand(path, 'cache size'), 'you said cache size\n');
  t.equal(await rawTalk(path, Buffer.from('revision\0')), 'you said revision\n', 'cvmfs_talk style: no newline, NUL tolerated');
  t.equal(await rawTalk(path, Buffer.alloc(5000, 'a')), 'command too long\n');
  t.same(seen, ['cache size', 'revision']);
  const failing = await TalkServer.start(join(dir, 'failing'), async () => {
    throw new Error('boom');
  });
  t.equal(await sendTalkCommand(failing.path, 'x'), 'Failed: boom\n', 'a thrown error is the answer, the server goes on');
  await failing.close();
});

t.test('a stale socket file is replaced, a live daemon keeps its socket', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'cvmfs_io.y.example.org');
  await writeFile(path, 'left over by a killed daemon');
  const first = await TalkServer.start(path, async () => 'first\n');
  t.equal(first.path, path, 'stale file replaced');
  const second = await TalkServer.start(path, async () => 'second\n');
  t.equal(second.path, `${path}.${process.pid}`, 'a live socket is not taken over');
  t.equal(await sendTalkCommand(path, 'pid'), 'first\n');
  t.equal(await sendTalkCommand(second.path, 'pid'), 'second\n');
  await second.close();
  await first.close();
  t.notOk(existsSync(path), 'removed on close');
  t.notOk(existsSync(second.path));
  const e = await sendTalkCommand(path, 'pid').catch((e: unknown) => e);
  t.ok(e instanceof TalkUnavailableError && e.reason === 'ENOENT', 'nobody listens any more');
});
