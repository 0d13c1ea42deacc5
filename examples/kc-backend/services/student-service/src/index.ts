import { createLogger, healthHandler, HttpError, loadConfig, readJsonBody, Router, sendJson, startServer } from '@kodingcaravan/shared';
import { seedStudents, StudentStore } from './students';

const config = loadConfig({ serviceName: 'student-service', port: 3001 });
const logger = createLogger(config.serviceName);
const store = new StudentStore(seedStudents);

const router = new Router()
  .get('/health', healthHandler(config.serviceName))
  .get('/students', (_req, res) => {
    const students = store.list();
    sendJson(res, 200, { data: students, count: students.length });
  })
  .get('/students/:id', (_req, res, { params }) => {
    const student = store.get(params.id);
    if (!student) throw new HttpError(404, `student ${params.id} not found`);
    sendJson(res, 200, { data: student });
  })
  .post('/students', async (req, res) => {
    const student = store.create(await readJsonBody(req));
    logger.info('student created', { id: student.id });
    sendJson(res, 201, { data: student });
  });

startServer({ config, logger, router });
