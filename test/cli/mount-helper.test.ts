/**
 * mount.cvmfs-ts's reading of mount(8)'s arguments (no mounting here; test/systemd/mount-helper
 * mounts through mount(8) for real): generic fstab options dropped, CVMFS_* parameters passed on
 * with their quoting intact, config_root= and log=, -s/-f/-v, and mount(8)'s exit statuses.
 */
import t from 'tap';
import { parseHelperArgs, describeRequest } from '../../src/cli/mount-helper';
import { parseMountOptions, formatMountOptions } from '../../src/config/bash-config';
import { spawnSync } from 'node:child_process';
import { resolve } from 'node:path';

const HELPER = resolve(__dirname, '../../bin/mount.cvmfs-ts');

t.test('fstab options: generic ones dropped, CVMFS_ parameters, config_root and log kept', async (t) => {
  const r = parseHelperArgs([
    'atlas.example.org',
    '/cvmfs/atlas.example.org',
    '-o',
    'defaults,_netdev,nodev,nosuid,ro,noauto,nofail,user,x-systemd.automount,x-systemd.device-timeout=5,comment=x,relatime',
    '-o',
    'CVMFS_TIMEOUT=10,CVMFS_SERVER_URL="http://a/cvmfs/@fqrn@;http://b,c/cvmfs/@fqrn@",config_root=/srv/etc-cvmfs,log=/tmp/m.log',
  ]);
  t.same(r, {
    fqrn: 'atlas.example.org',
    mountpoint: '/cvmfs/atlas.example.org',
    parameters: { CVMFS_TIMEOUT: '10', CVMFS_SERVER_URL: 'http://a/cvmfs/@fqrn@;http://b,c/cvmfs/@fqrn@' },
    configRoot: '/srv/etc-cvmfs',
    log: '/tmp/m.log',
    remount: false,
    fake: false,
    verbose: false,
    ignored: [],
  });
  // What the daemon gets with -o reads back as the same parameters, the quoted comma included.
  t.same(parseMountOptions(formatMountOptions(r.parameters)), r.parameters, 'parameters survive the trip to the daemon');
  t.equal(
    describeRequest(r),
    `cvmfs-ts mount atlas.example.org /cvmfs/atlas.example.org -o 'CVMFS_TIMEOUT="10",CVMFS_SERVER_URL="http://a/cvmfs/@fqrn@;http://b,c/cvmfs/@fqrn@"' --config-root /srv/etc-cvmfs --log /tmp/m.log`,
  );
});

t.test('flags as mount(8) passes them, grouped or not, before or after the operands', async (t) => {
  const r = parseHelperArgs(['-sfnv', '-ocomment=x,noexec', 'a.example.org', 'rel/dir', '-t', 'cvmfs-ts']);
  t.equal(r.fake, true);
  t.equal(r.verbose, true);
  t.same(r.ignored, ['noexec'], '-s: an unsupported option is ignored, not fatal');
  t.equal(r.mountpoint, resolve('rel/dir'), 'the mount point made absolute');
  t.equal(parseHelperArgs(['/home/me/a.example.org', '/mnt']).fqrn, 'a.example.org', 'a spec mount(8) turned into a path: its last component');
  t.equal(parseHelperArgs(['a.example.org', '/mnt', '-o', 'remount']).remount, true);
});

t.test('refusals are usage errors', async (t) => {
  for (const [argv, message] of [
    [['a.example.org'], /usage: mount\.cvmfs-ts FQRN MOUNTPOINT/],
    [['a.example.org', '/mnt', '-o', 'noexec'], /unsupported mount option 'noexec'/],
    [['a.example.org', '/mnt', '-o', 'CVMFS_X'], /unsupported mount option 'CVMFS_X'/],
    [['a.example.org', '/mnt', '-o'], /-o needs a value/],
    [['a.example.org', '/mnt', '-N', '/proc/1/ns/mnt'], /another mount namespace \(-N\) is not supported/],
    [['a.example.org', '/mnt', '-x'], /unknown option -x/],
    [['../etc', '/mnt'], /is not a repository name/],
    [['-', '/mnt'], /is not a repository name/],
    [['a.example.org.', '/mnt'], /is not a repository name/],
    [['a.example.org', '/mnt', '-o', 'CVMFS_X="unterminated'], /unterminated " quote/],
  ] as const) {
    t.throws(() => parseHelperArgs(argv), { code: 'E_USAGE', message }, argv.join(' '));
  }
});

t.test('the installed helper: exit 1 for a bad invocation, 0 for -f, 32 for a mount that fails', async (t) => {
  const helper = (args: string[]) =>
    spawnSync(HELPER, args, { encoding: 'utf8', env: { ...process.env, CVMFS_TS_CONFIG_ROOT: '/nonexistent' } });
  const usage = helper(['a.example.org']);
  t.equal(usage.status, 1);
  t.match(usage.stderr, /^mount\.cvmfs-ts: usage: /);
  const fake = helper(['a.example.org', '/mnt', '-fv', '-o', 'defaults,CVMFS_TIMEOUT=3']);
  t.equal(fake.status, 0);
  t.equal(fake.stdout, `mount.cvmfs-ts: cvmfs-ts mount a.example.org /mnt -o 'CVMFS_TIMEOUT="3"'\n`);
  const failed = helper(['a.example.org', '/nonexistent-mountpoint', '-o', 'log=/dev/null']);
  t.equal(failed.status, 32, 'a mount failure is 32 for mount(8)');
  t.match(failed.stderr, /^mount\.cvmfs-ts: .+/, 'with one sentence saying why');
  const remount = helper(['a.example.org', '/nonexistent-mountpoint', '-o', 'remount']);
  t.equal(remount.status, 32, 'remount of something not mounted fails');
});
