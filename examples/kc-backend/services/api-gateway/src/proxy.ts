import { Agent, IncomingMessage, request, ServerResponse } from 'node:http';
import { sendError, type Handler, type Logger } from '@kodingcaravan/shared';

/** Hop-by-hop headers (RFC 9110 §7.6.1) are not forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

function forwardHeaders(req: IncomingMessage): Record<string, string | string[]> {
  const headers: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
  }
  const remote = req.socket.remoteAddress;
  if (remote) {
    const prior = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = prior ? `${prior}, ${remote}` : remote;
  }
  return headers;
}

/**
 * One connection per upstream request, never a pooled one: each request looks the
 * service name up again, and Docker's DNS answers with the replicas of a scaled
 * service (`docker compose up --scale student-service=3`) in turn, so requests
 * spread over them. (Node 19+ keeps connections alive by default, which would
 * send every request to the first replica it reached.)
 */
const upstreamAgent = new Agent({ keepAlive: false });

export interface Upstream {
  name: string;
  baseUrl: URL;
}

export function parseUpstream(name: string, url: string): Upstream {
  let baseUrl: URL;
  try {
    baseUrl = new URL(url);
  } catch {
    throw new Error(`upstream ${name}: "${url}" is not a valid URL`);
  }
  if (baseUrl.protocol !== 'http:') {
    throw new Error(`upstream ${name}: only http:// URLs are supported, got ${baseUrl.protocol}`);
  }
  return { name, baseUrl };
}

/**
 * Streams the request to `upstream`, keeping the original path and query,
 * and streams the answer back. Failures become 502/504 JSON errors.
 */
export function proxyTo(upstream: Upstream, logger: Logger, timeoutMs = 10_000): Handler {
  return (req: IncomingMessage, res: ServerResponse) =>
    new Promise<void>((resolve) => {
      const target = new URL(req.url ?? '/', upstream.baseUrl);
      const upstreamReq = request(
        {
          protocol: target.protocol,
          hostname: target.hostname,
          port: target.port,
          method: req.method,
          path: target.pathname + target.search,
          headers: forwardHeaders(req),
          timeout: timeoutMs,
          agent: upstreamAgent,
        },
        (upstreamRes) => {
          const headers: Record<string, string | string[]> = {};
          for (const [name, value] of Object.entries(upstreamRes.headers)) {
            if (value !== undefined && !HOP_BY_HOP.has(name)) headers[name] = value;
          }
          headers['x-upstream'] = upstream.name;
          res.writeHead(upstreamRes.statusCode ?? 502, headers);
          upstreamRes.pipe(res);
          upstreamRes.on('end', resolve);
          upstreamRes.on('error', () => {
            res.destroy();
            resolve();
          });
        },
      );
      upstreamReq.on('timeout', () => {
        upstreamReq.destroy(new Error('upstream timeout'));
      });
      upstreamReq.on('error', (err) => {
        const timedOut = err.message === 'upstream timeout';
        logger.warn('upstream request failed', { upstream: upstream.name, target: target.href, err });
        if (!res.headersSent) {
          sendError(res, timedOut ? 504 : 502, `${upstream.name} is unavailable`);
        } else {
          res.destroy();
        }
        resolve();
      });
      req.pipe(upstreamReq);
    });
}

/** GETs `<baseUrl>/health` and reports whether it answered 200 in time. */
export function checkUpstream(upstream: Upstream, timeoutMs = 2_000): Promise<{ name: string; ok: boolean; status?: number; error?: string }> {
  return new Promise((resolve) => {
    const req = request(new URL('/health', upstream.baseUrl), { method: 'GET', timeout: timeoutMs, agent: upstreamAgent }, (res) => {
      res.resume();
      resolve({ name: upstream.name, ok: res.statusCode === 200, status: res.statusCode });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (err) => resolve({ name: upstream.name, ok: false, error: err.message }));
    req.end();
  });
}
