/** One line per event, naming the repository: `<ISO time> cvmfs-ts[<fqrn>] <level>: <message>`. */
export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createLogger(fqrn: string, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const line = (level: string, message: string) => write(`${new Date().toISOString()} cvmfs-ts[${fqrn}] ${level}: ${message}\n`);
  return {
    info: (m) => line('info', m),
    warn: (m) => line('warning', m),
    error: (m) => line('error', m),
  };
}
