import { randomUUID } from 'node:crypto';
import { HttpError } from '@kodingcaravan/shared';

export interface Student {
  id: string;
  name: string;
  email: string;
  createdAt: string;
}

const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

export class StudentStore {
  private readonly students = new Map<string, Student>();

  constructor(seed: Student[] = []) {
    for (const s of seed) this.students.set(s.id, s);
  }

  list(): Student[] {
    return [...this.students.values()];
  }

  get(id: string): Student | undefined {
    return this.students.get(id);
  }

  create(input: unknown): Student {
    if (typeof input !== 'object' || input === null) {
      throw new HttpError(400, 'body must be a JSON object');
    }
    const { name, email } = input as Record<string, unknown>;
    if (typeof name !== 'string' || name.trim() === '') {
      throw new HttpError(400, '"name" is required');
    }
    if (typeof email !== 'string' || !EMAIL_RE.test(email)) {
      throw new HttpError(400, '"email" must be a valid address');
    }
    const normalized = email.toLowerCase();
    if (this.list().some((s) => s.email === normalized)) {
      throw new HttpError(409, `a student with email ${normalized} already exists`);
    }
    const student: Student = { id: randomUUID(), name: name.trim(), email: normalized, createdAt: new Date().toISOString() };
    this.students.set(student.id, student);
    return student;
  }
}

export const seedStudents: Student[] = [
  { id: 'stu-001', name: 'Ada Lovelace', email: 'ada@example.com', createdAt: '2024-01-08T09:00:00.000Z' },
  { id: 'stu-002', name: 'Alan Turing', email: 'alan@example.com', createdAt: '2024-01-09T09:00:00.000Z' },
  { id: 'stu-003', name: 'Grace Hopper', email: 'grace@example.com', createdAt: '2024-01-10T09:00:00.000Z' },
];
