/**
 * The mount table and mount(8)/umount(8), for the parts of cvmfs-ts that mount things other than
 * its own FUSE file system (overlay for thin images, repositories started on demand).
 * Reads /proc/self/mountinfo only: never touches a mountpoint, which could be our own FUSE mount.
 */
import { readFile } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CvmfsError } from '../errors';

const run = promisify(execFile);

export interface MountEntry {
  readonly mountpoint: string;
  readonly fsType: string;
  readonly source: string;
}

/** mountinfo escapes space, tab, newline and backslash as \ooo octal. */
function unescapeMountinfo(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export async function mountTable(): Promise<MountEntry[]> {
  const info = await readFile('/proc/self/mountinfo', 'utf8');
  const entries: MountEntry[] = [];
  for (const line of info.split('\n')) {
    if (!line) continue;
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0 || fields.length < dash + 3) continue;
    entries.push({ mountpoint: unescapeMountinfo(fields[4]!), fsType: fields[dash + 1]!, source: unescapeMountinfo(fields[dash + 2]!) });
  }
  return entries;
}

/** Whether `path` (absolute, normalized) is a mount point in this process's namespace. */
export async function isMountpoint(path: string): Promise<boolean> {
  return (await mountTable()).some((m) => m.mountpoint === path);
}

/** Runs mount(8); `cwd` lets option strings use short relative paths (see thin-mount). */
export async function mount(args: readonly string[], cwd?: string): Promise<void> {
  try {
    await run('mount', [...args], { cwd });
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '').trim();
    throw new CvmfsError('E_IO', `mount ${args.join(' ')}: ${stderr || (e as Error).message}`, { cause: e });
  }
}

/** Unmounts `path`; `lazy` detaches it even while busy. */
export async function unmount(path: string, lazy = false): Promise<void> {
  try {
    await run('umount', lazy ? ['-l', path] : [path]);
  } catch (e) {
    const stderr = String((e as { stderr?: unknown }).stderr ?? '').trim();
    throw new CvmfsError('E_IO', `umount ${path}: ${stderr || (e as Error).message}`, { cause: e });
  }
}
