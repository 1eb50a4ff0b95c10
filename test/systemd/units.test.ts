/**
 * What scripts/install.sh installs, checked without a running systemd: the files and links it
 * lays out (DESTDIR staging) and removes again; `systemd-analyze verify` of each unit as installed
 * (inside a private mount namespace where the staged /usr/bin/cvmfs-ts exists, since verify checks
 * ExecStart binaries); the mount unit systemd-fstab-generator makes from the documented fstab
 * line; and the autofs program map's answers.
 */
import t from 'tap';
import { lstat, mkdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../helpers/repo';
import { CHECKOUT, installNamespace, run, stageInstall } from '../helpers/install';

const FQRN = 'units.cvmfs-ts.io';
const UNITS = ['cvmfs-ts@.service', 'cvmfs-ts-snapshotter.service'];
const AUTO_MAP = join(CHECKOUT, 'autofs', 'auto.cvmfs-ts');

/** verify's complaints about our units (other lines would be about the machine's own units). */
function ourComplaints(stderr: string): string[] {
  return stderr.split('\n').filter((l) => /cvmfs/.test(l));
}

t.test('install.sh lays out links into the checkout and copies of the units, and uninstalls them', async (t) => {
  const stage = join(await tempDir(t), 'stage');
  await stageInstall(stage, ['--autofs']);
  for (const [path, target] of [
    ['usr/bin/cvmfs-ts', 'bin/cvmfs-ts'],
    ['sbin/mount.cvmfs-ts', 'bin/mount.cvmfs-ts'],
    ['usr/libexec/cvmfs-ts/auto.cvmfs-ts', 'autofs/auto.cvmfs-ts'],
  ]) {
    t.equal(await readlink(join(stage, path!)), join(CHECKOUT, target!), `/${path} links to the checkout's ${target}`);
  }
  for (const u of UNITS) {
    t.equal(await readFile(join(stage, 'etc/systemd/system', u), 'utf8'), await readFile(join(CHECKOUT, 'systemd', u), 'utf8'), `${u} installed`);
  }
  t.match(await readFile(join(stage, 'etc/auto.master.d/cvmfs-ts.autofs'), 'utf8'), /^\/cvmfs program:\/usr\/libexec\/cvmfs-ts\/auto\.cvmfs-ts$/m, 'autofs master map entry');
  t.ok((await lstat(join(stage, 'cvmfs'))).isDirectory(), '/cvmfs created');

  await stageInstall(stage, ['--uninstall']);
  for (const p of ['usr/bin/cvmfs-ts', 'sbin/mount.cvmfs-ts', 'usr/libexec/cvmfs-ts', 'etc/auto.master.d/cvmfs-ts.autofs', ...UNITS.map((u) => `etc/systemd/system/${u}`)]) {
    t.notOk(existsSync(join(stage, p)), `/${p} removed`);
  }
});

t.test('systemd-analyze verify accepts every installed unit and the mount unit made from the fstab line', async (t) => {
  const dir = await tempDir(t);
  const stage = join(dir, 'stage');
  await stageInstall(stage);
  const ns = await installNamespace(t, stage);
  const listed = (await ns.run(['ls', '-l', '/usr/bin/cvmfs-ts', '/sbin/mount.cvmfs-ts'])).stdout;
  t.match(listed, /\/usr\/bin\/cvmfs-ts -> /, 'inside the namespace /usr/bin/cvmfs-ts is there, as the units name it');
  t.match(listed, /\/sbin\/mount\.cvmfs-ts -> /, 'and so is /sbin/mount.cvmfs-ts');

  const units = join(stage, 'etc/systemd/system');
  for (const unit of [`cvmfs-ts@${FQRN}.service`, 'cvmfs-ts-snapshotter.service']) {
    // A template is verified through an instance: its file is found beside the instance name.
    const r = await ns.run(['systemd-analyze', 'verify', '--man=no', join(units, unit)]);
    t.equal(r.code, 0, `${unit}: verify exits 0`);
    t.same(ourComplaints(r.stderr), [], `${unit}: no warnings about it`);
  }

  // The fstab line as systemd reads it at boot: a mount unit of type cvmfs-ts, part of remote-fs.target.
  const fstab = join(dir, 'fstab');
  await writeFile(fstab, `${FQRN} /cvmfs/${FQRN} cvmfs-ts defaults,_netdev,nodev 0 0\n`);
  const generated = join(dir, 'generator');
  await mkdir(generated);
  const gen = await run(['/lib/systemd/system-generators/systemd-fstab-generator', generated, generated, generated], { env: { SYSTEMD_FSTAB: fstab, SYSTEMD_PROC_CMDLINE: '' } });
  t.equal(gen.code, 0, 'systemd-fstab-generator accepts the line');
  const name = `${(await run(['systemd-escape', '--path', `/cvmfs/${FQRN}`])).stdout.trim()}.mount`; // cvmfs-units.cvmfs\x2dts.io.mount
  const mountUnit = await readFile(join(generated, name), 'utf8');
  t.match(mountUnit, `What=${FQRN}\nWhere=/cvmfs/${FQRN}\nType=cvmfs-ts\nOptions=defaults,_netdev,nodev\n`, 'the mount unit runs mount -t cvmfs-ts FQRN /cvmfs/FQRN');
  t.ok(existsSync(join(generated, 'remote-fs.target.requires', name)), 'mounted with the remote file systems (_netdev)');
  const r = await ns.run(['systemd-analyze', 'verify', '--man=no', join(generated, name)]);
  t.equal(r.code, 0, `${name}: verify exits 0`);
  t.same(ourComplaints(r.stderr), [], `${name}: no warnings about it`);
});

t.test('verify does catch a broken unit (so the test above means something)', async (t) => {
  const dir = await tempDir(t);
  const stage = join(dir, 'stage');
  await stageInstall(stage);
  const ns = await installNamespace(t, stage);
  const broken = join(dir, 'cvmfs-ts-broken.service');
  const text = await readFile(join(CHECKOUT, 'systemd', 'cvmfs-ts-snapshotter.service'), 'utf8');
  await writeFile(broken, text.replace('Type=notify', 'Tpye=notify').replace('/usr/bin/cvmfs-ts', '/usr/bin/cvmfs-ts-missing'));
  const r = await ns.run(['systemd-analyze', 'verify', '--man=no', broken]);
  t.match(ourComplaints(r.stderr).join('\n'), /Unknown key 'Tpye'/, 'an unknown key is reported');
  t.match(r.stderr, /cvmfs-ts-missing is not executable/, 'a missing ExecStart binary is reported');
  t.not(r.code, 0, 'and verify fails');
});

t.test('the autofs program map answers for configured repositories only', async (t) => {
  const dir = await tempDir(t);
  const root = join(dir, 'etc-cvmfs');
  await mkdir(join(root, 'config.d'), { recursive: true });
  await mkdir(join(root, 'domain.d'), { recursive: true });
  await mkdir(join(root, 'default.d'), { recursive: true });
  await writeFile(join(root, 'config.d', 'one.example.org.conf'), 'CVMFS_SERVER_URL=http://localhost/cvmfs/@fqrn@\n');
  await writeFile(join(root, 'domain.d', 'grid.example.net.local'), 'CVMFS_SERVER_URL=http://localhost/cvmfs/@fqrn@\n');
  // The default files are bash: what they print must not end up in the map entry.
  await writeFile(join(root, 'default.local'), 'echo noise from default.local\nCVMFS_REPOSITORIES="listed.example.com, other.example.com"\n');
  await writeFile(join(root, 'default.d', '50-site.conf'), 'echo more noise >&2\n');
  const env = { CVMFS_TS_CONFIG_ROOT: root };

  const answer = async (key: string) => run([AUTO_MAP, key], { env });
  for (const key of ['one.example.org', 'atlas.grid.example.net', 'listed.example.com', 'other.example.com']) {
    const r = await answer(key);
    t.equal(r.code, 0, `${key}: found`);
    t.equal(r.stdout, `-fstype=cvmfs-ts,config_root=${root} :${key}\n`, `${key}: one map entry, mounted through mount.cvmfs-ts with this configuration root`);
  }
  for (const key of ['unknown.example.org', 'example.org', 'noDots', '', '.hidden.example.org', '../one.example.org', 'one.example.org.', 'a..b', '-o', 'x y.org', 'one.example.org/x']) {
    const r = await answer(key);
    t.equal(r.code, 1, `${JSON.stringify(key)}: not a configured repository`);
    t.equal(r.stdout, '', `${JSON.stringify(key)}: no map entry`);
  }
});
