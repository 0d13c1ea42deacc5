import { createLogger, healthHandler, HttpError, loadConfig, readJsonBody, Router, sendJson, startServer } from '@kodingcaravan/shared';
import { CourseStore, seedCourses } from './courses';

const config = loadConfig({ serviceName: 'course-service', port: 3002 });
const logger = createLogger(config.serviceName);
const store = new CourseStore(seedCourses);

const router = new Router()
  .get('/health', healthHandler(config.serviceName))
  .get('/courses', (_req, res, { query }) => {
    const courses = store.list({ level: query.get('level'), maxDuration: query.get('maxDuration') });
    sendJson(res, 200, { data: courses, count: courses.length });
  })
  .get('/courses/:id', (_req, res, { params }) => {
    const course = store.get(params.id);
    if (!course) throw new HttpError(404, `course ${params.id} not found`);
    sendJson(res, 200, { data: course });
  })
  .post('/courses', async (req, res) => {
    const course = store.create(await readJsonBody(req));
    logger.info('course created', { id: course.id, duration: course.duration });
    sendJson(res, 201, { data: course });
  });

startServer({ config, logger, router });
