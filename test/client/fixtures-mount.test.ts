/** Every real-server fixture mounts, and treelist.py on our mount prints what the real client showed. */
import t from 'tap';
import { readdirSync, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { serveRepository } from '../helpers/serve';
import { tempDir, SHARED, sourceListing } from '../helpers/repo';
import { mountRepository } from '../helpers/mount';

const FIXTURES = join(SHARED, 'fixtures');

t.ok(existsSync(FIXTURES), `fixtures at ${FIXTURES}`);
for (const name of readdirSync(FIXTURES)) {
  t.test(`fixture ${name}`, async (t) => {
    const dir = join(FIXTURES, name);
    const pub = readdirSync(join(dir, 'keys')).find((f) => f.endsWith('.pub'))!;
    const fqrn = pub.slice(0, -'.pub'.length);
    const server = await serveRepository(t, join(dir, 'repo'));
    const work = await tempDir(t);
    const m = await mountRepository(t, work, {
      fqrn,
      serverUrl: server.url,
      publicKey: join(dir, 'keys', pub),
      config: ['CVMFS_MAGIC_XATTRS_VISIBILITY=always', 'CVMFS_SHARED_CACHE=no', 'CVMFS_QUOTA_LIMIT=-1'],
    });
    const expected = await readFile(join(dir, 'expected.jsonl'), 'utf8');
    t.equal(sourceListing(m.mountpoint), expected, 'treelist.py on our mount equals expected.jsonl');
    if (name === 'real-small') t.equal(await m.xattr('random-1.5M.bin', 'user.chunks'), '15');
    t.equal(await m.xattr('', 'user.root_hash'), (await readFile(join(dir, 'repo', '.cvmfspublished'), 'latin1')).split('\n')[0]!.slice(1));
  });
}
