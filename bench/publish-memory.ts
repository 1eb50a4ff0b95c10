/**
 * bench/publish-memory: peak RSS and throughput of `cvmfs-ts publish` on the sizes —
 * a single 4 GB file and a 5 GB tree of 50,000 files — measured with /usr/bin/time.
 * Run: npx ts-node bench/publish-memory.ts [--scale 0.1]   (writes bench/results/publish-memory.{json,md})
 * Needs about 2 × 9 GB free in $BENCH_DIR (default /var/tmp).
 */
import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { cpus, totalmem } from 'node:os';
import { createKeys } from '../src/publish/keys';
import { pseudoRandomBytes } from '../src/demo/demo-tree';

const FQRN = 'bench.cvmfs-ts.io';
const BIN = resolve(__dirname, '../bin/cvmfs-ts');
const scale = Number(process.argv[process.argv.indexOf('--scale') + 1]) || 1;

interface Result {
  case: string;
  bytes: number;
  files: number;
  seconds: number;
  mb_per_s: number;
  peak_rss_mb: number;
}

/** Half-compressible content, unique per file, written from a reusable random pool. */
async function writeFileOfSize(path: string, size: number, pool: Buffer, salt: number): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (let off = 0; off < size; off += pool.length) {
      const piece = pool.subarray(0, Math.min(pool.length, size - off));
      piece.writeUInt32LE(salt >>> 0, 0);
      piece.writeUInt32LE(off / pool.length, 4);
      await fh.write(piece);
    }
  } finally {
    await fh.close();
  }
}

function measure(name: string, src: string, repo: string, keys: string, bytes: number, files: number): Result {
  const started = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', 'maxrss_kb=%M', process.execPath, BIN, 'publish', FQRN, src, repo, '--keys', keys], {
    encoding: 'utf8',
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  if (r.status !== 0) throw new Error(`${name}: publish failed: ${r.stderr}`);
  const rss = Number(/maxrss_kb=(\d+)/.exec(r.stderr)?.[1]) / 1024;
  process.stdout.write(`${name}: ${r.stdout.trim()}\n`);
  return { case: name, bytes, files, seconds, mb_per_s: bytes / 1e6 / seconds, peak_rss_mb: rss };
}

async function main(): Promise<void> {
  const base = await mkdtemp(join(process.env.BENCH_DIR ?? '/var/tmp', 'cvmfs-ts-bench-'));
  try {
    const keys = join(base, 'keys');
    await createKeys(FQRN, keys);
    const pool = Buffer.concat([pseudoRandomBytes(1 << 19, 11), Buffer.alloc(1 << 19, 0x61)]); // 1 MiB, ~50% compressible
    const results: Result[] = [];

    const single = join(base, 'single');
    await mkdir(single);
    const fileBytes = Math.round(4e9 * scale);
    await writeFileOfSize(join(single, 'big.bin'), fileBytes, pool, 1);
    results.push(measure('single 4 GB file', single, join(base, 'repo-single'), keys, fileBytes, 1));
    await rm(single, { recursive: true });
    await rm(join(base, 'repo-single'), { recursive: true });

    const tree = join(base, 'tree');
    const dirs = Math.round(2000 * scale);
    const perDir = 25;
    const size = 100_000;
    for (let d = 0; d < dirs; d++) {
      const dir = join(tree, `d${Math.floor(d / 100)}`, `d${d}`);
      await mkdir(dir, { recursive: true });
      for (let f = 0; f < perDir; f++) await writeFileOfSize(join(dir, `f${f}.dat`), size, pool, d * perDir + f + 2);
    }
    await writeFile(join(tree, '.cvmfsdirtab'), '/*\n');
    results.push(measure('5 GB tree, 50,000 files', tree, join(base, 'repo-tree'), keys, dirs * perDir * size, dirs * perDir));

    const machine = `${cpus().length} cores (${cpus()[0]?.model.trim()}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`;
    const json = { date: new Date().toISOString(), machine, scale, results };
    const out = resolve(__dirname, 'results');
    await mkdir(out, { recursive: true });
    await writeFile(join(out, 'publish-memory.json'), JSON.stringify(json, null, 2) + '\n');
    const md = [
      `Publish memory and throughput — ${json.date.slice(0, 10)}, ${machine}, scale ${scale}`,
      '',
      '| case | data | files | time | throughput | peak RSS |',
      '|---|---|---|---|---|---|',
      ...results.map(
        (r) =>
          `| ${r.case} | ${(r.bytes / 1e9).toFixed(2)} GB | ${r.files} | ${r.seconds.toFixed(1)} s | ${r.mb_per_s.toFixed(0)} MB/s | ${r.peak_rss_mb.toFixed(0)} MB |`,
      ),
    ].join('\n');
    await writeFile(join(out, 'publish-memory.md'), md + '\n');
    process.stdout.write(md + '\n');
  } finally {
    await rm(base, { recursive: true, force: true });
  }
}

void main();
