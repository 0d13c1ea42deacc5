import { createLogger, healthHandler, HttpError, loadConfig, readJsonBody, Router, sendJson, startServer } from '@kodingcaravan/shared';
import { EnrollmentStore, seedEnrollments } from './enrollments';

const config = loadConfig({ serviceName: 'enrollment-service', port: 3003 });
const logger = createLogger(config.serviceName);
const store = new EnrollmentStore(seedEnrollments);

const router = new Router()
  .get('/health', healthHandler(config.serviceName))
  .get('/enrollments', (_req, res, { query }) => {
    const enrollments = store.list({ studentId: query.get('studentId'), courseId: query.get('courseId') });
    sendJson(res, 200, { data: enrollments, count: enrollments.length });
  })
  .get('/enrollments/:id', (_req, res, { params }) => {
    const enrollment = store.get(params.id);
    if (!enrollment) throw new HttpError(404, `enrollment ${params.id} not found`);
    sendJson(res, 200, { data: enrollment });
  })
  .post('/enrollments', async (req, res) => {
    const enrollment = store.create(await readJsonBody(req));
    logger.info('enrollment created', { id: enrollment.id, studentId: enrollment.studentId, courseId: enrollment.courseId });
    sendJson(res, 201, { data: enrollment });
  })
  .delete('/enrollments/:id', (_req, res, { params }) => {
    const enrollment = store.cancel(params.id);
    logger.info('enrollment cancelled', { id: enrollment.id });
    sendJson(res, 200, { data: enrollment });
  });

startServer({ config, logger, router });
