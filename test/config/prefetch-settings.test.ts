/**
 * The download and prefetch parameters: CVMFS_TS_PARALLEL_DOWNLOADS (default 16, at least 1),
 * CVMFS_TS_READAHEAD_CHUNKS (default 2, 0 = off), CVMFS_TS_PREFETCH and CVMFS_TS_CATALOG_PREFETCH
 * (default yes), parsed like the others: E_USAGE naming the parameter, its value and where it was set.
 */
import t from 'tap';
import { COMMAND_LINE_SOURCE } from '../../src/config/bash-config';
import { DEFAULTS, KNOWN_PARAMETERS } from '../../src/config/parameters';
import { expectUsageError, settingsWith } from '../helpers/settings';

const NAMES = ['CVMFS_TS_PARALLEL_DOWNLOADS', 'CVMFS_TS_READAHEAD_CHUNKS', 'CVMFS_TS_PREFETCH', 'CVMFS_TS_CATALOG_PREFETCH'];

t.test('defaults', async (t) => {
  const s = settingsWith();
  t.equal(s.parallelDownloads, 16, 'CVMFS_TS_PARALLEL_DOWNLOADS 16');
  t.equal(s.readaheadChunks, 2, 'CVMFS_TS_READAHEAD_CHUNKS 2');
  t.equal(s.prefetch, true, 'CVMFS_TS_PREFETCH yes');
  t.equal(s.catalogPrefetch, true, 'CVMFS_TS_CATALOG_PREFETCH yes');
  t.equal(DEFAULTS.CVMFS_TS_PARALLEL_DOWNLOADS, 16);
  t.equal(DEFAULTS.CVMFS_TS_READAHEAD_CHUNKS, 2);
  t.equal(DEFAULTS.CVMFS_TS_PREFETCH, true);
  t.equal(DEFAULTS.CVMFS_TS_CATALOG_PREFETCH, true);
  for (const p of NAMES) t.ok(KNOWN_PARAMETERS.includes(p), `${p} is known (showconfig)`);
  for (const p of NAMES) t.equal(settingsWith({ [p]: '  ' }).parameters.get(p), '  ', `${p}: passed on in parameters`);
  const blank = settingsWith(Object.fromEntries(NAMES.map((n) => [n, ' '])));
  t.same([blank.parallelDownloads, blank.readaheadChunks, blank.prefetch, blank.catalogPrefetch], [16, 2, true, true], 'empty values: the defaults');
});

t.test('CVMFS_TS_PARALLEL_DOWNLOADS', async (t) => {
  t.equal(settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: '4' }).parallelDownloads, 4);
  t.equal(settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: ' 64 ' }).parallelDownloads, 64, 'white space trimmed');
  t.equal(settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: '1' }).parallelDownloads, 1, 'one at a time');
  t.equal(settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: '0' }).parallelDownloads, 1, '0: at least 1');
  expectUsageError(t, () => settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: 'many' }), /^CVMFS_TS_PARALLEL_DOWNLOADS='many' in \/etc\/cvmfs\/default\.local is invalid: expected a non-negative integer/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: '-4' }), /^CVMFS_TS_PARALLEL_DOWNLOADS='-4' .*is invalid: expected a non-negative integer/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: '2.5' }), /^CVMFS_TS_PARALLEL_DOWNLOADS='2\.5'/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_PARALLEL_DOWNLOADS: ['8x', COMMAND_LINE_SOURCE] }), /^CVMFS_TS_PARALLEL_DOWNLOADS='8x' on the command line is invalid/);
});

t.test('CVMFS_TS_READAHEAD_CHUNKS', async (t) => {
  t.equal(settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: '0' }).readaheadChunks, 0, '0 turns readahead off');
  t.equal(settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: '5' }).readaheadChunks, 5);
  t.equal(settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: '1' }).readaheadChunks, 1);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: '-1' }), /^CVMFS_TS_READAHEAD_CHUNKS='-1' in \/etc\/cvmfs\/default\.local is invalid: expected a non-negative integer/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: 'two' }), /^CVMFS_TS_READAHEAD_CHUNKS='two' .*expected a non-negative integer/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_READAHEAD_CHUNKS: ['yes', COMMAND_LINE_SOURCE] }), /^CVMFS_TS_READAHEAD_CHUNKS='yes' on the command line is invalid/);
});

t.test('CVMFS_TS_PREFETCH and CVMFS_TS_CATALOG_PREFETCH', async (t) => {
  for (const [name, key] of [
    ['CVMFS_TS_PREFETCH', 'prefetch'],
    ['CVMFS_TS_CATALOG_PREFETCH', 'catalogPrefetch'],
  ] as const) {
    for (const v of ['no', 'off', '0', 'false', 'NO', ' Off ']) t.equal(settingsWith({ [name]: v })[key], false, `${name}=${v}`);
    for (const v of ['yes', 'on', '1', 'true', 'YES']) t.equal(settingsWith({ [name]: v })[key], true, `${name}=${v}`);
    expectUsageError(t, () => settingsWith({ [name]: 'maybe' }), new RegExp(`^${name}='maybe' in /etc/cvmfs/default\\.local is invalid: expected yes/on/1/true or no/off/0/false`));
    expectUsageError(t, () => settingsWith({ [name]: ['2', COMMAND_LINE_SOURCE] }), new RegExp(`^${name}='2' on the command line is invalid`));
  }
  const s = settingsWith({ CVMFS_TS_PREFETCH: 'no' });
  t.equal(s.catalogPrefetch, true, 'the two are independent');
  t.equal(settingsWith({ CVMFS_TS_CATALOG_PREFETCH: 'no' }).prefetch, true);
});
