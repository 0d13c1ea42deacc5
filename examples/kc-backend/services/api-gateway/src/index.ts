import { createLogger, envOr, healthHandler, loadConfig, Router, sendJson, startServer } from '@kodingcaravan/shared';
import { checkUpstream, parseUpstream, proxyTo } from './proxy';

const config = loadConfig({ serviceName: 'api-gateway', port: 3000 });
const logger = createLogger(config.serviceName);

const upstreams = {
  students: parseUpstream('student-service', envOr('STUDENT_SERVICE_URL', 'http://127.0.0.1:3001')),
  courses: parseUpstream('course-service', envOr('COURSE_SERVICE_URL', 'http://127.0.0.1:3002')),
  enrollments: parseUpstream('enrollment-service', envOr('ENROLLMENT_SERVICE_URL', 'http://127.0.0.1:3003')),
};
const timeoutMs = Number(envOr('UPSTREAM_TIMEOUT_MS', '10000'));

const router = new Router()
  .get('/health', healthHandler(config.serviceName))
  .get('/health/upstreams', async (_req, res) => {
    const results = await Promise.all(Object.values(upstreams).map((u) => checkUpstream(u)));
    const ok = results.every((r) => r.ok);
    sendJson(res, ok ? 200 : 503, { status: ok ? 'ok' : 'degraded', upstreams: results });
  });

for (const [prefix, upstream] of Object.entries(upstreams)) {
  // `/students` and `/students/...` both go to the student service, path unchanged.
  router.all(`/${prefix}/*`, proxyTo(upstream, logger, timeoutMs));
}

logger.info('upstreams configured', {
  upstreams: Object.fromEntries(Object.values(upstreams).map((u) => [u.name, u.baseUrl.origin])),
});

startServer({ config, logger, router });
