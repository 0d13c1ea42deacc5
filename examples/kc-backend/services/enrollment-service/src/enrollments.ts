import { randomUUID } from 'node:crypto';
import { HttpError } from '@kodingcaravan/shared';

export type EnrollmentStatus = 'active' | 'completed' | 'cancelled';

export interface Enrollment {
  id: string;
  studentId: string;
  courseId: string;
  status: EnrollmentStatus;
  enrolledAt: string;
}

export class EnrollmentStore {
  private readonly enrollments = new Map<string, Enrollment>();

  constructor(seed: Enrollment[] = []) {
    for (const e of seed) this.enrollments.set(e.id, e);
  }

  list(filter: { studentId?: string | null; courseId?: string | null } = {}): Enrollment[] {
    return [...this.enrollments.values()].filter(
      (e) => (!filter.studentId || e.studentId === filter.studentId) && (!filter.courseId || e.courseId === filter.courseId),
    );
  }

  get(id: string): Enrollment | undefined {
    return this.enrollments.get(id);
  }

  create(input: unknown): Enrollment {
    if (typeof input !== 'object' || input === null) {
      throw new HttpError(400, 'body must be a JSON object');
    }
    const { studentId, courseId } = input as Record<string, unknown>;
    if (typeof studentId !== 'string' || studentId === '') throw new HttpError(400, '"studentId" is required');
    if (typeof courseId !== 'string' || courseId === '') throw new HttpError(400, '"courseId" is required');
    const existing = this.list({ studentId, courseId }).find((e) => e.status === 'active');
    if (existing) {
      throw new HttpError(409, `student ${studentId} is already enrolled in ${courseId}`, { id: existing.id });
    }
    const enrollment: Enrollment = { id: randomUUID(), studentId, courseId, status: 'active', enrolledAt: new Date().toISOString() };
    this.enrollments.set(enrollment.id, enrollment);
    return enrollment;
  }

  cancel(id: string): Enrollment {
    const enrollment = this.enrollments.get(id);
    if (!enrollment) throw new HttpError(404, `enrollment ${id} not found`);
    enrollment.status = 'cancelled';
    return enrollment;
  }
}

export const seedEnrollments: Enrollment[] = [
  { id: 'enr-001', studentId: 'stu-001', courseId: 'crs-101', status: 'completed', enrolledAt: '2024-02-01T10:00:00.000Z' },
  { id: 'enr-002', studentId: 'stu-001', courseId: 'crs-201', status: 'active', enrolledAt: '2024-03-04T10:00:00.000Z' },
  { id: 'enr-003', studentId: 'stu-002', courseId: 'crs-301', status: 'active', enrolledAt: '2024-03-11T10:00:00.000Z' },
];
