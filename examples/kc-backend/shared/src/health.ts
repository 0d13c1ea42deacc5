import type { Handler } from './http';
import { sendJson } from './http';

export interface HealthPayload {
  status: 'ok';
  service: string;
  uptime: number;
}

export function healthPayload(service: string): HealthPayload {
  return { status: 'ok', service, uptime: Math.round(process.uptime() * 1000) / 1000 };
}

/** `GET /health`: `{ status: "ok", service, uptime }` with uptime in seconds. */
export function healthHandler(service: string): Handler {
  return (_req, res) => {
    sendJson(res, 200, healthPayload(service), { 'cache-control': 'no-store' });
  };
}
