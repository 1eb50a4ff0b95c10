/**
 * One line per event, naming the repository: `<ISO time> cvmfs-ts[<fqrn>] <level>: <message>`, on
 * stderr (the daemon log file, or journald under systemd) and, with CVMFS_DEBUGLOG, in a debug file.
 *
 * Levels follow cvmfs (cvmfs/util/logging.cc): warnings and errors always go out (syslog priority
 * LOG_WARNING / LOG_ERR); ordinary messages go out at the priority CVMFS_SYSLOG_LEVEL chooses —
 * 1 LOG_DEBUG, 2 LOG_INFO, 3 or unset LOG_NOTICE — so 1 is the quiet setting: like a syslog daemon
 * configured for `*.info`, stderr drops debug priority. Debug events (each HTTP attempt, FUSE call,
 * catalog load) go only to the CVMFS_DEBUGLOG file, which receives every event.
 *
 * When stderr is the journal (systemd sets JOURNAL_STREAM to its device:inode), each line starts
 * with `<N>` (sd-daemon(3)) so journald records the priority (`journalctl -p`).
 */
import { closeSync, fstatSync, openSync, writeSync } from 'node:fs';
import { CvmfsError, describeError } from '../errors';

export interface Logger {
  /** True when debug lines go somewhere: build expensive debug messages only then. */
  readonly debugEnabled: boolean;
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** CVMFS_SYSLOG_LEVEL: the syslog priority of ordinary messages (see the module comment). */
export type SyslogLevel = 1 | 2 | 3;

export interface LogSettings {
  readonly syslogLevel: SyslogLevel;
  /** CVMFS_DEBUGLOG: absolute path of a file that receives every event, debug ones included. */
  readonly debugLog?: string;
}

/** A logger whose settings come from the configuration it helps to report on (the mount daemon's). */
export interface ConfigurableLogger extends Logger {
  /** Applies the settings; E_IO when the debug log cannot be opened (cvmfs aborts then too). */
  configure(s: LogSettings): void;
  close(): void;
}

export interface LoggerOptions {
  /** Where ordinary lines go (default stderr). */
  readonly write?: (line: string) => void;
  /** Prefix lines with `<priority>` for journald (default: when stderr is the journal). */
  readonly journal?: boolean;
}

const LOG_ERR = 3;
const LOG_WARNING = 4;
const LOG_NOTICE = 5;
const LOG_INFO = 6;
const LOG_DEBUG = 7;
const ORDINARY_PRIORITY: Record<SyslogLevel, number> = { 1: LOG_DEBUG, 2: LOG_INFO, 3: LOG_NOTICE };

/** Whether fd 2 is the stream systemd connected to the journal (JOURNAL_STREAM=<dev>:<ino>). */
function stderrIsJournal(): boolean {
  const m = /^(\d+):(\d+)$/.exec(process.env.JOURNAL_STREAM ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(2);
    return String(st.dev) === m[1] && String(st.ino) === m[2];
  } catch {
    return false;
  }
}

export function createLogger(fqrn: string, o: LoggerOptions = {}): ConfigurableLogger {
  const write = o.write ?? ((l: string) => void process.stderr.write(l));
  const journal = o.journal ?? stderrIsJournal();
  let ordinary = ORDINARY_PRIORITY[3];
  let debugFd: number | undefined;
  let debugPath = '';

  const emit = (level: string, priority: number, message: string) => {
    // One event, one line: a message with line breaks (a child's stderr) stays on its line.
    const text = `${new Date().toISOString()} cvmfs-ts[${fqrn}] ${level}: ${message.replace(/\r?\n/g, '\\n')}\n`;
    if (priority < LOG_DEBUG) write(journal ? `<${priority}>${text}` : text);
    if (debugFd !== undefined) {
      try {
        // Synchronous, as cvmfs's fprintf+fflush: the lines before a crash are the ones that matter.
        writeSync(debugFd, text);
      } catch (e) {
        const fd = debugFd;
        debugFd = undefined;
        closeSync(fd);
        write(`${new Date().toISOString()} cvmfs-ts[${fqrn}] error: debug log ${debugPath}: ${describeError(e)}; no more debug logging\n`);
      }
    }
  };

  const logger: ConfigurableLogger = {
    get debugEnabled() {
      return debugFd !== undefined;
    },
    debug: (m) => {
      if (debugFd !== undefined) emit('debug', LOG_DEBUG, m);
    },
    info: (m) => emit('info', ordinary, m),
    warn: (m) => emit('warning', LOG_WARNING, m),
    error: (m) => emit('error', LOG_ERR, m),
    configure(s) {
      ordinary = ORDINARY_PRIORITY[s.syslogLevel];
      if (s.debugLog === undefined || s.debugLog === debugPath) return;
      let fd: number;
      try {
        // Opened before the file system is mounted: the path cannot lead into our own mountpoint.
        fd = openSync(s.debugLog, 'a', 0o600);
      } catch (e) {
        throw new CvmfsError('E_IO', `cannot open CVMFS_DEBUGLOG file ${s.debugLog}: ${describeError(e)}`, { cause: e });
      }
      logger.close();
      debugFd = fd;
      debugPath = s.debugLog;
    },
    close() {
      if (debugFd !== undefined) closeSync(debugFd);
      debugFd = undefined;
      debugPath = '';
    },
  };
  return logger;
}
