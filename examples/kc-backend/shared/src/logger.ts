export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

function isLogLevel(value: string | undefined): value is LogLevel {
  return value !== undefined && Object.prototype.hasOwnProperty.call(LEVELS, value);
}

function serializeError(err: unknown): unknown {
  if (err instanceof Error) {
    return { name: err.name, message: err.message, stack: err.stack };
  }
  return err;
}

/**
 * A JSON-lines logger: one object per line on stdout (stderr for errors),
 * with time, level, service and message.
 */
export function createLogger(
  service: string,
  options: { level?: LogLevel; base?: LogFields; write?: (line: string, level: LogLevel) => void } = {},
): Logger {
  const envLevel = process.env.LOG_LEVEL;
  const level: LogLevel = options.level ?? (isLogLevel(envLevel) ? envLevel : 'info');
  const threshold = LEVELS[level];
  const base = options.base ?? {};
  const write =
    options.write ??
    ((line: string, lvl: LogLevel) => {
      (lvl === 'error' ? process.stderr : process.stdout).write(line + '\n');
    });

  const log = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[lvl] < threshold) return;
    const record: LogFields = { time: new Date().toISOString(), level: lvl, service, msg, ...base };
    if (fields) {
      for (const [key, value] of Object.entries(fields)) {
        record[key] = key === 'err' || value instanceof Error ? serializeError(value) : value;
      }
    }
    write(JSON.stringify(record), lvl);
  };

  return {
    debug: (msg, fields) => log('debug', msg, fields),
    info: (msg, fields) => log('info', msg, fields),
    warn: (msg, fields) => log('warn', msg, fields),
    error: (msg, fields) => log('error', msg, fields),
    child: (fields) => createLogger(service, { level, base: { ...base, ...fields }, write }),
  };
}
