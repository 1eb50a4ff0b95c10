/**
 * Publish progress on stderr: a live bar on a TTY (cli-progress), nothing while running otherwise
 * (the caller prints a one-line summary at the end).
 */
import { SingleBar, Presets } from 'cli-progress';
import type { PublishProgress } from '../publish/publisher';

export interface ProgressDisplay extends PublishProgress {
  stop(): void;
}

export function createProgress(stream: NodeJS.WriteStream = process.stderr): ProgressDisplay {
  if (!stream.isTTY) return { stop() {} };
  const bar = new SingleBar(
    {
      stream,
      format: 'publishing {bar} {entries} entries, {mib} MiB read, {rate} MiB/s',
      hideCursor: true,
      barsize: 20,
    },
    Presets.shades_classic,
  );
  const started = Date.now();
  let entries = 0;
  let bytes = 0;
  // No total is known without a second walk of the tree, so the bar cycles as work is done.
  bar.start(100, 0, { entries: 0, mib: '0.0', rate: '0.0' });
  const update = () => {
    const seconds = Math.max((Date.now() - started) / 1000, 0.001);
    bar.update(entries % 100, {
      entries,
      mib: (bytes / 2 ** 20).toFixed(1),
      rate: (bytes / 2 ** 20 / seconds).toFixed(1),
    });
  };
  return {
    entry() {
      entries++;
      if (entries % 64 === 0) update();
    },
    bytes(n: number) {
      bytes += n;
      update();
    },
    stop() {
      update();
      bar.stop();
    },
  };
}
