export interface ServiceConfig {
  /** Logical service name, used in logs and the /health payload. */
  serviceName: string;
  /** TCP port the HTTP server listens on. */
  port: number;
  /** Interface to bind; 0.0.0.0 inside containers. */
  host: string;
  /** NODE_ENV, "development" when unset. */
  env: string;
}

export interface ConfigDefaults {
  serviceName: string;
  port: number;
  host?: string;
}

/** Parses a TCP port, throwing on anything that is not an integer in 1..65535. */
export function parsePort(value: string, source = 'PORT'): number {
  const trimmed = value.trim();
  if (!/^\d+$/.test(trimmed)) {
    throw new Error(`${source} must be an integer, got "${value}"`);
  }
  const port = Number(trimmed);
  if (port < 1 || port > 65535) {
    throw new Error(`${source} must be between 1 and 65535, got ${port}`);
  }
  return port;
}

/**
 * Reads PORT, HOST and SERVICE_NAME from the environment, falling back to the
 * defaults each service passes in.
 */
export function loadConfig(defaults: ConfigDefaults, env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  const rawPort = env.PORT;
  const port = rawPort !== undefined && rawPort !== '' ? parsePort(rawPort) : defaults.port;
  return {
    serviceName: env.SERVICE_NAME || defaults.serviceName,
    port,
    host: env.HOST || defaults.host || '0.0.0.0',
    env: env.NODE_ENV || 'development',
  };
}

/** Reads an env var, or returns the fallback when it is unset or empty. */
export function envOr(name: string, fallback: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = env[name];
  return value !== undefined && value !== '' ? value : fallback;
}
