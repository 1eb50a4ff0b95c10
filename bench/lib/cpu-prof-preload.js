/**
 * CPU profiles of a cvmfs-ts mount daemon, one per bench pass, for bench/fs --cpu-prof. Node does
 * not accept --cpu-prof in NODE_OPTIONS (and it would profile start-up and teardown too), but it
 * does accept --require: the bench sets
 *   NODE_OPTIONS=--require=<this file>  CVMFS_TS_BENCH_CPU_PROF_DIR=<dir>
 * for `cvmfs-ts mount`, whose daemon (the `--foreground` process it spawns) inherits both. In the
 * daemon only, SIGUSR2 starts V8's sampling profiler (through the in-process inspector) and the
 * next SIGUSR2 stops it and writes <dir>/daemon-<pid>-<n>.cpuprofile (n = 1, 2, …).
 * Plain JavaScript: the daemon runs dist/, not ts-node.
 */
'use strict';
const dir = process.env.CVMFS_TS_BENCH_CPU_PROF_DIR;
if (dir && process.argv.includes('mount') && process.argv.includes('--foreground')) {
  const inspector = require('node:inspector');
  const fs = require('node:fs');
  const path = require('node:path');
  const session = new inspector.Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: Number(process.env.CVMFS_TS_BENCH_CPU_PROF_INTERVAL_US) || 250 });
  let running = false;
  let n = 0;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.start');
      return;
    }
    running = false;
    session.post('Profiler.stop', (err, result) => {
      if (err || !result) return;
      const file = path.join(dir, `daemon-${process.pid}-${++n}.cpuprofile`);
      fs.mkdirSync(dir, { recursive: true });
      // Written under a temporary name and renamed: the bench waits for the final name.
      fs.writeFileSync(`${file}.tmp`, JSON.stringify(result.profile));
      fs.renameSync(`${file}.tmp`, file);
    });
  });
}
