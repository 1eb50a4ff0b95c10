/**
 * parseSettings over an in-memory configuration, for tests of single parameters: the minimum a
 * mount needs plus the parameters under test, and a check that a value is refused with E_USAGE.
 */
import t, { type Test } from 'tap';
import type { ConfigValue, LoadedConfig } from '../../src/config/bash-config';
import { parseSettings } from '../../src/config/parameters';
import type { ClientSettings } from '../../src/config/settings';
import { CvmfsError } from '../../src/errors';

/** Where parameters come from unless given as [value, source]. */
export const SETTINGS_SOURCE = '/etc/cvmfs/default.local';

let keysDir: string | undefined;

/** parseSettings over the minimum a mount needs plus `extra` (each from SETTINGS_SOURCE unless [value, source]). */
export function settingsWith(extra: Record<string, string | [string, string]> = {}): ClientSettings {
  keysDir ??= t.testdir({ 'k.pub': 'key' });
  const map = new Map<string, ConfigValue>();
  const values = { CVMFS_SERVER_URL: 'http://s1/cvmfs/r.org', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir, ...extra };
  for (const [k, v] of Object.entries(values)) map.set(k, Array.isArray(v) ? { value: v[0], source: v[1] } : { value: v, source: SETTINGS_SOURCE });
  const config: LoadedConfig = { fqrn: 'r.org', root: '/etc/cvmfs', files: [], values: map, get: (n) => map.get(n)?.value };
  return parseSettings(config);
}

/** Asserts that `f` throws E_USAGE with a message matching `pattern`. */
export function expectUsageError(t: Test, f: () => unknown, pattern: RegExp): void {
  try {
    f();
    t.fail(`expected E_USAGE matching ${pattern}`);
  } catch (e) {
    t.ok(CvmfsError.is(e, 'E_USAGE'), 'E_USAGE');
    t.match((e as Error).message, pattern);
  }
}
