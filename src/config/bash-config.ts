/**
 * Loading a repository's client configuration the way the real client does (§5.13,
 * `OptionsManager::ParseDefault` / `BashOptionsManager::ParsePath`).
 *
 * Files, later ones winning, all under a configurable root (default /etc/cvmfs):
 *   default.conf, default.d/*.conf (byte order), default.local,
 *   domain.d/<domain>.conf, domain.d/<domain>.local, config.d/<fqrn>.conf, config.d/<fqrn>.local
 * where <domain> is the fqrn without its first label.
 *
 * Not supported: the configuration repository (CVMFS_CONFIG_REPOSITORY). The real client reads
 * /cvmfs/<config repo>/etc/cvmfs/{default.conf,domain.d,config.d} in between the local files and
 * protects CVMFS_CONFIG_REPOSITORY from later changes; we read local files only, and
 * CVMFS_CONFIG_REPOSITORY is an ordinary (unused) value.
 *
 * Files are bash scripts. Each is sourced in a subshell whose cwd is the file's directory, with
 * CVMFS_FQRN and every value read so far exported; afterwards the value of every name the file
 * assigns (`NAME=` at the start of a line, optionally after `export`/`readonly`/`eval`) is read
 * back. All files of one load are sourced by a single bash process running a fixed script; file
 * paths and names travel as arguments, values come back NUL-separated on a dedicated descriptor,
 * and the values handed on to the next file are re-created from bash's own `printf %q` quoting.
 * Differences from the real client, deliberately:
 *  - values are read back exactly (the real client uses an unquoted `echo $NAME`, which collapses
 *    white space, expands globs and keeps only the first line);
 *  - a name the file assigns that ends up unset (assignment in a branch not taken, `unset`) is
 *    left out instead of being recorded as the empty string;
 *  - a file that does not parse in bash, or that exits the shell, is an error (E_USAGE);
 *  - bash runs with a clean environment (PATH and CVMFS_FQRN only), not the caller's.
 * Then `@fqrn@` and `@org@` are substituted in every value, and command-line overrides
 * (`-o CVMFS_X=...`) are applied last with source "command line" (also substituted).
 */
import { execFile, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { CvmfsError, describeError } from '../errors';

export interface ConfigValue {
  readonly value: string;
  /** The absolute path of the file that set it, or "command line". */
  readonly source: string;
}

export interface LoadedConfig {
  readonly fqrn: string;
  /** The configuration root the files were read from (absolute). */
  readonly root: string;
  /** The files that were sourced, in order. */
  readonly files: readonly string[];
  readonly values: ReadonlyMap<string, ConfigValue>;
  get(name: string): string | undefined;
}

export interface LoadOptions {
  /** Configuration root; default /etc/cvmfs. */
  readonly root?: string;
  /** PARAM → value, e.g. from `-o`; they win over every file. */
  readonly overrides?: Readonly<Record<string, string>>;
  /** The bash to run; default `bash` from PATH. */
  readonly bash?: string;
  /** Give up after this many milliseconds (a file that hangs); default 30 000. */
  readonly timeoutMs?: number;
}

export const DEFAULT_CONFIG_ROOT = '/etc/cvmfs';
export const COMMAND_LINE_SOURCE = 'command line';

const NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;
const ASSIGNMENT_RE = /^\s*(?:export\s+|readonly\s+|eval\s+)?([A-Za-z_][A-Za-z0-9_]*)=/;
const FQRN_RE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+$/;
/** Names read back but not handed on to later files: they would change our own shell. */
const NOT_EXPORTED = new Set(['IFS', 'POSIXLY_CORRECT', 'SHELLOPTS', 'BASHOPTS', 'BASH_ENV', 'ENV']);
const INTERNAL_PREFIX = '__cvmfs_';

/**
 * The fixed script. Arguments: groups of <file> <dir> <count> <name>... .
 * fd 3 carries the records to us (NUL-terminated fields):
 *   F <file> | S <status of source> | V <name> <value> | U <name> | E | D <status of subshell>
 * Whatever the configuration files print goes to stderr.
 * (`${'$'}{` writes a literal `${` inside String.raw, where `\${` would keep the backslash.)
 */
const SCRIPT = String.raw`
exec 3>&1 1>&2
while [[ $# -gt 0 ]]; do
  __cvmfs_file=$1 __cvmfs_dir=$2 __cvmfs_count=$3
  shift 3
  __cvmfs_names=("${'$'}{@:1:__cvmfs_count}")
  shift "$__cvmfs_count"
  builtin printf 'F\0%s\0' "$__cvmfs_file" >&3
  __cvmfs_state=$(
    exec 4>&1 1>&2
    builtin readonly __cvmfs_file __cvmfs_dir __cvmfs_names
    builtin cd -- "$__cvmfs_dir" 2>/dev/null || builtin cd /
    builtin source "$__cvmfs_file" 3>&- 4>&-
    builtin printf 'S\0%s\0' "$?" >&3
    for __cvmfs_name in "${'$'}{__cvmfs_names[@]}"; do
      if [[ -n ${'$'}{!__cvmfs_name+x} ]]; then
        builtin printf 'V\0%s\0%s\0' "$__cvmfs_name" "${'$'}{!__cvmfs_name}" >&3
        case $__cvmfs_name in
          ${[...NOT_EXPORTED].join('|')}) ;;
          *) builtin printf 'builtin export %s=%q\n' "$__cvmfs_name" "${'$'}{!__cvmfs_name}" >&4 ;;
        esac
      else
        builtin printf 'U\0%s\0' "$__cvmfs_name" >&3
        builtin printf 'builtin unset %s\n' "$__cvmfs_name" >&4
      fi
    done
    builtin printf 'E\0' >&3
  )
  builtin printf 'D\0%s\0' "$?" >&3
  builtin eval "$__cvmfs_state"
done
`;

/** The names a configuration file assigns, in order of first appearance. */
export function assignedNames(text: string): string[] {
  const names = new Set<string>();
  for (const line of text.split(/\r?\n/)) {
    const m = ASSIGNMENT_RE.exec(line);
    if (m && !m[1].startsWith(INTERNAL_PREFIX)) names.add(m[1]);
  }
  return [...names];
}

function checkFqrn(fqrn: string): void {
  if (!FQRN_RE.test(fqrn)) {
    throw new CvmfsError(
      'E_USAGE',
      `'${fqrn}' is not a fully qualified repository name (expected something like atlas.cern.ch)`,
    );
  }
}

/** The configuration files for `fqrn` under `root`, in the order they are sourced (existing or not). */
async function candidateFiles(root: string, fqrn: string): Promise<string[]> {
  const domain = fqrn.slice(fqrn.indexOf('.') + 1);
  let dropIns: string[] = [];
  try {
    dropIns = (await fsp.readdir(path.join(root, 'default.d')))
      .filter((n) => n.endsWith('.conf'))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
      .map((n) => path.join(root, 'default.d', n));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') {
      throw new CvmfsError('E_IO', `cannot list ${path.join(root, 'default.d')}: ${describeError(e)}`, { cause: e });
    }
  }
  return [
    path.join(root, 'default.conf'),
    ...dropIns,
    path.join(root, 'default.local'),
    path.join(root, 'domain.d', `${domain}.conf`),
    path.join(root, 'domain.d', `${domain}.local`),
    path.join(root, 'config.d', `${fqrn}.conf`),
    path.join(root, 'config.d', `${fqrn}.local`),
  ];
}

/** The text of a regular file, or undefined when there is none at `file`. */
async function readIfFile(file: string): Promise<string | undefined> {
  try {
    const st = await fsp.stat(file);
    if (!st.isFile()) return undefined;
    return await fsp.readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw new CvmfsError('E_IO', `cannot read configuration file ${file}: ${describeError(e)}`, { cause: e });
  }
}

interface FileResult {
  file: string;
  sourceStatus?: number;
  values: Map<string, string | undefined>; // undefined: unset after sourcing
  ended: boolean;
  shellStatus?: number;
}

function parseRecords(out: Buffer): FileResult[] {
  const fields = out.toString('utf8').split('\0');
  const results: FileResult[] = [];
  let cur: FileResult | undefined;
  let i = 0;
  const next = (): string => {
    if (i >= fields.length) throw new CvmfsError('E_IO', 'truncated reply from bash while reading the configuration');
    return fields[i++];
  };
  while (i < fields.length) {
    const tag = fields[i++];
    if (tag === '' && i === fields.length) break; // after the last terminator
    if (tag === 'F') {
      cur = { file: next(), values: new Map(), ended: false };
      results.push(cur);
      continue;
    }
    if (!cur) throw new CvmfsError('E_IO', `unexpected reply from bash while reading the configuration`);
    switch (tag) {
      case 'S':
        cur.sourceStatus = Number(next());
        break;
      case 'V': {
        const name = next();
        cur.values.set(name, next());
        break;
      }
      case 'U':
        cur.values.set(next(), undefined);
        break;
      case 'E':
        cur.ended = true;
        break;
      case 'D':
        cur.shellStatus = Number(next());
        break;
      default:
        throw new CvmfsError('E_IO', `unexpected reply from bash while reading the configuration`);
    }
  }
  return results;
}

function bashEnv(fqrn: string): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH || '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', CVMFS_FQRN: fqrn };
}

function runBash(
  bash: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
): Promise<{ stdout: Buffer; stderr: string; status: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bash, ['--noprofile', '--norc', '-c', SCRIPT, 'cvmfs-config', ...args], {
      cwd: '/',
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let err = '';
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => {
      if (err.length < 65536) err += b.toString('utf8');
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CvmfsError('E_IO', `cannot run ${bash} to read the configuration: ${describeError(e)}`, { cause: e }));
    });
    child.on('close', (status) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new CvmfsError('E_USAGE', `reading the configuration files took longer than ${timeoutMs} ms`));
      } else {
        resolve({ stdout: Buffer.concat(out), stderr: err, status });
      }
    });
  });
}

/** bash's complaint about `file` if it does not parse, else undefined (runs `bash -n`). */
function syntaxError(bash: string, file: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(bash, ['--noprofile', '--norc', '-n', file], { env, cwd: '/' }, (error, _stdout, stderr) => {
      if (!error) return resolve(undefined);
      const lines = String(stderr)
        .split('\n')
        .map((l) => (l.startsWith(`${file}: `) ? l.slice(file.length + 2) : l).trim())
        .filter((l) => l !== '');
      resolve(lines.join('; ') || describeError(error));
    });
  });
}

/** Replaces `@fqrn@` and `@org@`; other `@name@` stay as they are. */
export function substituteTemplates(value: string, fqrn: string): string {
  const org = fqrn.split('.')[0];
  return value.replaceAll('@fqrn@', fqrn).replaceAll('@org@', org);
}

class Config implements LoadedConfig {
  constructor(
    readonly fqrn: string,
    readonly root: string,
    readonly files: readonly string[],
    readonly values: ReadonlyMap<string, ConfigValue>,
  ) {}
  get(name: string): string | undefined {
    return this.values.get(name)?.value;
  }
}

export async function loadConfig(fqrn: string, o: LoadOptions = {}): Promise<LoadedConfig> {
  checkFqrn(fqrn);
  const root = path.resolve(o.root ?? DEFAULT_CONFIG_ROOT);
  const bash = o.bash ?? 'bash';
  const env = bashEnv(fqrn);

  const files: string[] = [];
  const args: string[] = [];
  for (const file of await candidateFiles(root, fqrn)) {
    const text = await readIfFile(file);
    if (text === undefined) continue;
    const names = assignedNames(text);
    files.push(file);
    args.push(file, path.dirname(file), String(names.length), ...names);
  }

  const values = new Map<string, ConfigValue>();
  if (files.length > 0) {
    const run = await runBash(bash, args, env, o.timeoutMs ?? 30_000);
    const results = parseRecords(run.stdout);
    for (const [idx, file] of files.entries()) {
      const r = results[idx];
      if (!r || r.file !== file) {
        const detail = run.stderr.trim().split('\n').slice(-1)[0] ?? '';
        throw new CvmfsError(
          'E_USAGE',
          `bash stopped (status ${run.status}) before it had read configuration file ${file}` +
            (detail ? `: ${detail}` : ''),
        );
      }
      if (r.sourceStatus === 2) {
        const complaint = await syntaxError(bash, file, env);
        if (complaint !== undefined) {
          throw new CvmfsError('E_USAGE', `configuration file ${file} is not valid bash: ${complaint}`);
        }
      }
      if (!r.ended) {
        throw new CvmfsError(
          'E_USAGE',
          `configuration file ${file} exits the shell (status ${r.shellStatus ?? 'unknown'}) instead of returning`,
        );
      }
      for (const [name, value] of r.values) {
        if (value === undefined) values.delete(name);
        else values.set(name, { value, source: file });
      }
    }
  }

  for (const [name, v] of values) values.set(name, { value: substituteTemplates(v.value, fqrn), source: v.source });
  for (const [name, value] of Object.entries(o.overrides ?? {})) {
    if (!NAME_RE.test(name)) throw new CvmfsError('E_USAGE', `'${name}' is not a parameter name`);
    values.set(name, { value: substituteTemplates(value, fqrn), source: COMMAND_LINE_SOURCE });
  }
  return new Config(fqrn, root, files, values);
}

/**
 * Parses the text of `-o` options: comma-separated `CVMFS_NAME=value` items. Within an item,
 * single quotes keep everything literally up to the next single quote, double quotes group
 * (a backslash escapes `"` and `\` inside them), and a backslash outside quotes escapes the next
 * character — so a comma belongs to a value only when quoted or escaped
 * (`-o 'CVMFS_X="a,b"'` or `-o 'CVMFS_X=a\,b'`). Empty items are skipped; later items win.
 * Items that are not `CVMFS_<NAME>=...` are refused with E_USAGE.
 */
export function parseMountOptions(text: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const item of splitMountOptions(text)) {
    if (item.trim() === '') continue;
    const eq = item.indexOf('=');
    const name = eq < 0 ? item : item.slice(0, eq);
    if (eq < 0 || !/^CVMFS_[A-Za-z0-9_]+$/.test(name)) {
      throw new CvmfsError(
        'E_USAGE',
        `unsupported mount option '${item}': only CVMFS_<PARAMETER>=<value> options are accepted`,
      );
    }
    result[name] = item.slice(eq + 1);
  }
  return result;
}

/**
 * The items of an option string with the quoting of parseMountOptions undone (empty items kept);
 * the mount(8) helper uses it to sort generic options from CVMFS_ ones.
 */
export function splitMountOptions(text: string): string[] {
  const items: string[] = [];
  let cur = '';
  let quote: '' | "'" | '"' = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") quote = '';
      else cur += c;
    } else if (quote === '"') {
      if (c === '"') quote = '';
      else if (c === '\\' && (text[i + 1] === '"' || text[i + 1] === '\\')) cur += text[++i];
      else cur += c;
    } else if (c === "'" || c === '"') {
      quote = c;
    } else if (c === '\\') {
      if (i + 1 >= text.length) throw new CvmfsError('E_USAGE', `mount options end in a lone backslash: ${text}`);
      cur += text[++i];
    } else if (c === ',') {
      items.push(cur);
      cur = '';
    } else {
      cur += c;
    }
  }
  if (quote) throw new CvmfsError('E_USAGE', `unterminated ${quote} quote in mount options: ${text}`);
  items.push(cur);
  return items;
}

/** The inverse of parseMountOptions: every value double-quoted, so commas and quotes survive. */
export function formatMountOptions(options: Readonly<Record<string, string>>): string {
  return Object.entries(options)
    .map(([name, value]) => `${name}="${value.replace(/["\\]/g, '\\$&')}"`)
    .join(',');
}
