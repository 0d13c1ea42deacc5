import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import type { ServiceConfig } from './config';
import type { Logger } from './logger';

/** An error that maps to an HTTP status and a JSON `{ error }` body. */
export class HttpError extends Error {
  constructor(
    public readonly status: number,
    message: string,
    public readonly details?: unknown,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(payload).toString(),
    ...headers,
  });
  res.end(payload);
}

export function sendError(res: ServerResponse, status: number, message: string, details?: unknown): void {
  sendJson(res, status, details === undefined ? { error: message } : { error: message, details });
}

const DEFAULT_BODY_LIMIT = 1024 * 1024;

/** Reads and parses a JSON request body; empty bodies parse as `{}`. */
export function readJsonBody<T = unknown>(req: IncomingMessage, limit = DEFAULT_BODY_LIMIT): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        reject(new HttpError(413, `request body exceeds ${limit} bytes`));
        req.resume();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (failed) return;
      const text = Buffer.concat(chunks).toString('utf8').trim();
      if (text === '') {
        resolve({} as T);
        return;
      }
      try {
        resolve(JSON.parse(text) as T);
      } catch {
        reject(new HttpError(400, 'request body is not valid JSON'));
      }
    });
    req.on('error', (err) => {
      if (!failed) {
        failed = true;
        reject(err);
      }
    });
  });
}

export interface RouteContext {
  /** Named `:param` segments; `*` holds the rest of a wildcard match. */
  params: Record<string, string>;
  query: URLSearchParams;
  path: string;
}

export type Handler = (req: IncomingMessage, res: ServerResponse, ctx: RouteContext) => void | Promise<void>;

interface Route {
  method: string;
  segments: string[];
  wildcard: boolean;
  handler: Handler;
}

function splitPath(path: string): string[] {
  return path.split('/').filter((s) => s.length > 0);
}

/**
 * A tiny router: exact segments, `:name` parameters and a trailing `*`
 * that matches the rest of the path (including nothing).
 */
export class Router {
  private readonly routes: Route[] = [];

  add(method: string, pattern: string, handler: Handler): this {
    const segments = splitPath(pattern);
    const wildcard = segments[segments.length - 1] === '*';
    if (wildcard) segments.pop();
    this.routes.push({ method: method.toUpperCase(), segments, wildcard, handler });
    return this;
  }

  get(pattern: string, handler: Handler): this {
    return this.add('GET', pattern, handler);
  }

  post(pattern: string, handler: Handler): this {
    return this.add('POST', pattern, handler);
  }

  put(pattern: string, handler: Handler): this {
    return this.add('PUT', pattern, handler);
  }

  delete(pattern: string, handler: Handler): this {
    return this.add('DELETE', pattern, handler);
  }

  /** Registers a handler for every method. */
  all(pattern: string, handler: Handler): this {
    return this.add('*', pattern, handler);
  }

  private match(route: Route, parts: string[]): Record<string, string> | null {
    if (route.wildcard ? parts.length < route.segments.length : parts.length !== route.segments.length) {
      return null;
    }
    const params: Record<string, string> = {};
    for (let i = 0; i < route.segments.length; i++) {
      const seg = route.segments[i];
      if (seg.startsWith(':')) {
        try {
          params[seg.slice(1)] = decodeURIComponent(parts[i]);
        } catch {
          return null;
        }
      } else if (seg !== parts[i]) {
        return null;
      }
    }
    if (route.wildcard) params['*'] = parts.slice(route.segments.length).join('/');
    return params;
  }

  /** Dispatches a request; answers 404/405 JSON when nothing matches. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const parts = splitPath(url.pathname);
    const method = (req.method ?? 'GET').toUpperCase();
    let pathMatched = false;
    for (const route of this.routes) {
      const params = this.match(route, parts);
      if (!params) continue;
      pathMatched = true;
      if (route.method !== '*' && route.method !== method && !(method === 'HEAD' && route.method === 'GET')) continue;
      await route.handler(req, res, { params, query: url.searchParams, path: url.pathname });
      return;
    }
    if (pathMatched) {
      sendError(res, 405, `method ${method} not allowed on ${url.pathname}`);
    } else {
      sendError(res, 404, `no route for ${method} ${url.pathname}`);
    }
  }
}

export interface StartServerOptions {
  config: ServiceConfig;
  logger: Logger;
  router: Router;
}

/**
 * Creates the HTTP server, logs each request as a JSON line, maps thrown
 * errors to JSON responses and shuts down cleanly on SIGTERM/SIGINT
 * (node runs as PID 1 in the container, so the handlers matter).
 */
export function startServer({ config, logger, router }: StartServerOptions): Server {
  const server = createServer((req, res) => {
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      logger.info('request', { method: req.method, url: req.url, status: res.statusCode, ms: Math.round(ms * 10) / 10 });
    });
    router.handle(req, res).catch((err: unknown) => {
      if (err instanceof HttpError) {
        if (!res.headersSent) sendError(res, err.status, err.message, err.details);
        return;
      }
      logger.error('unhandled error', { err });
      if (!res.headersSent) {
        sendError(res, 500, 'internal server error');
      } else {
        res.destroy();
      }
    });
  });

  server.listen(config.port, config.host, () => {
    logger.info('listening', { host: config.host, port: config.port, env: config.env });
  });
  server.on('error', (err) => {
    logger.error('server error', { err });
    process.exitCode = 1;
  });

  const shutdown = (signal: NodeJS.Signals): void => {
    logger.info('shutting down', { signal });
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);

  return server;
}
