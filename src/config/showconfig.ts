/**
 * `showconfig` output like `cvmfs_config showconfig [-s] <repo>` (§5.15): first
 * `CVMFS_REPOSITORY_NAME=<fqrn>`, then the CVMFS_* parameters sorted by name as
 * `NAME=value    # from <source>` (values already @fqrn@/@org@-substituted, shell-quoted when they
 * hold anything but [A-Za-z0-9/:._,-]). CVMFS_CACHE_DIR is always shown with the effective cache
 * directory (with its source only when it was configured). Without `short`, the parameters this
 * client knows but that are unset are listed as `NAME=`, as the real tool does; with `short` they
 * are left out.
 */
import type { LoadedConfig } from './bash-config';
import { KNOWN_PARAMETERS } from './parameters';
import type { ClientSettings } from './settings';

/** Like the real client's EscapeShell, but with valid quoting of `'`. */
export function shellQuote(value: string): string {
  if (/^[A-Za-z0-9/:._,-]*$/.test(value)) return value;
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

export function formatShowConfig(
  config: LoadedConfig,
  settings: ClientSettings,
  o: { short?: boolean } = {},
): string {
  const names = new Set<string>(['CVMFS_CACHE_DIR']);
  for (const name of config.values.keys()) if (name.startsWith('CVMFS_')) names.add(name);
  if (!o.short) for (const name of KNOWN_PARAMETERS) names.add(name);
  names.delete('CVMFS_REPOSITORY_NAME');

  const lines = [`CVMFS_REPOSITORY_NAME=${shellQuote(config.fqrn)}`];
  for (const name of [...names].sort(byteOrder)) {
    const v = config.values.get(name);
    if (name === 'CVMFS_CACHE_DIR') {
      lines.push(`CVMFS_CACHE_DIR=${shellQuote(settings.cacheDir)}` + (v ? `    # from ${v.source}` : ''));
    } else if (v) {
      lines.push(`${name}=${shellQuote(v.value)}    # from ${v.source}`);
    } else {
      lines.push(`${name}=`);
    }
  }
  return lines.join('\n') + '\n';
}
