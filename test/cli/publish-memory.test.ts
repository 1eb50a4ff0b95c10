/**
 * Streaming: publishing a file far larger than the memory budget keeps the process small.
 * (bench/publish-memory.sh measures the 4 GB file and 5 GB tree of the issue.)
 */
import t from 'tap';
import { mkdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';

const FQRN = 'memory.cvmfs.io';
const FILE_BYTES = 1 << 30; // 1 GiB: buffering it whole would blow the limit at once
const RSS_LIMIT_KB = 300 * 1024;

t.test('peak RSS stays under 300 MB publishing a 1 GiB file', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await mkdir(src);
  await writeFile(join(src, 'small.txt'), 'small\n');
  await writeFile(join(src, 'big.bin'), '');
  await truncate(join(src, 'big.bin'), FILE_BYTES); // sparse: cheap to create, still read byte by byte
  const r = await runCli(['publish', FQRN, src, join(dir, 'repo'), '--keys', await testKeys(FQRN)], {
    prefix: ['/usr/bin/time', '-f', 'maxrss_kb=%M'],
    timeoutMs: 300_000,
  });
  t.equal(r.code, 0, r.stderr);
  const rss = Number(/maxrss_kb=(\d+)/.exec(r.stderr)?.[1]);
  t.ok(rss > 0, 'measured');
  t.ok(rss < RSS_LIMIT_KB, `peak RSS ${(rss / 1024).toFixed(0)} MB`);
  t.match(r.stdout, /revision 1: 3 entries, 1024\.0 MiB of files/);
});
