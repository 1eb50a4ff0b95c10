/**
 * A second process using a cache's quota ledger, driven line by line over stdin by quota.test.ts:
 * `open DIR LIMIT`, `insert HASH SIZE` (writes the object file too), `pin HASH`, `unpin HASH`, `flush`,
 * `size`, `cleanup TARGET`, `close`, `exit`. Answers `ok [result]` or `error MESSAGE` per line.
 */
import { createInterface } from 'node:readline';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { SqliteQuota, objectFile } from '../../src/cache/quota';
import { ContentHash } from '../../src/format/hash';

let quota: SqliteQuota | undefined;

async function run(words: string[]): Promise<string> {
  const [cmd, a, b] = words;
  switch (cmd) {
    case 'open':
      quota = await SqliteQuota.open(a!, { limitBytes: Number(b), flushMs: 60_000 });
      return String(process.pid);
    case 'insert': {
      const file = objectFile(quota!.dir, a!);
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, Buffer.alloc(Number(b), 7));
      quota!.insert(ContentHash.parse(a!), Number(b), 'child', 'regular');
      return '';
    }
    case 'pin':
      quota!.pin(ContentHash.parse(a!));
      return '';
    case 'unpin':
      quota!.unpin(ContentHash.parse(a!));
      return '';
    case 'flush':
      quota!.flush();
      return '';
    case 'size':
      return String(quota!.size());
    case 'cleanup':
      return String(await quota!.cleanup(Number(a)));
    case 'close':
      await quota!.close();
      return '';
    case 'exit':
      process.exit(0);
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
let queue = Promise.resolve();
lines.on('line', (line) => {
  queue = queue.then(async () => {
    try {
      process.stdout.write(`ok ${await run(line.trim().split(/\s+/))}\n`);
    } catch (e) {
      process.stdout.write(`error ${(e as Error).message.replace(/\n/g, ' ')}\n`);
    }
  });
});
process.stdout.write('ready\n');
