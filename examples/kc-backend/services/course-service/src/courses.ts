import { randomUUID } from 'node:crypto';
import ms from 'ms';
import { HttpError } from '@kodingcaravan/shared';

export interface Course {
  id: string;
  title: string;
  level: 'beginner' | 'intermediate' | 'advanced';
  /** Course length in milliseconds. */
  durationMs: number;
  /** Human-readable length, e.g. "6 weeks" (formatted by `ms`). */
  duration: string;
}

const LEVELS: Course['level'][] = ['beginner', 'intermediate', 'advanced'];

/**
 * Parses user input such as "6w", "10 days" or "90m" with `ms`. Returns
 * undefined for anything `ms` cannot read (it throws on the empty string).
 */
export function parseDuration(text: string): number | undefined {
  if (text.trim() === '' || text.length > 100) return undefined;
  // The typings only accept literal-looking values; user input is checked at run time instead.
  const value = ms(text as ms.StringValue);
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

export function makeCourse(id: string, title: string, level: Course['level'], length: string): Course {
  const durationMs = parseDuration(length);
  if (durationMs === undefined || durationMs <= 0) {
    throw new HttpError(400, `"duration" must be a positive duration such as "6w" or "10d", got "${length}"`);
  }
  return { id, title, level, durationMs, duration: ms(durationMs, { long: true }) };
}

export class CourseStore {
  private readonly courses = new Map<string, Course>();

  constructor(seed: Course[] = []) {
    for (const c of seed) this.courses.set(c.id, c);
  }

  list(filter: { level?: string | null; maxDuration?: string | null } = {}): Course[] {
    let result = [...this.courses.values()];
    if (filter.level) result = result.filter((c) => c.level === filter.level);
    if (filter.maxDuration) {
      const max = parseDuration(filter.maxDuration);
      if (max === undefined) {
        throw new HttpError(400, `"maxDuration" is not a duration: "${filter.maxDuration}"`);
      }
      result = result.filter((c) => c.durationMs <= max);
    }
    return result;
  }

  get(id: string): Course | undefined {
    return this.courses.get(id);
  }

  create(input: unknown): Course {
    if (typeof input !== 'object' || input === null) {
      throw new HttpError(400, 'body must be a JSON object');
    }
    const { title, level = 'beginner', duration } = input as Record<string, unknown>;
    if (typeof title !== 'string' || title.trim() === '') {
      throw new HttpError(400, '"title" is required');
    }
    if (typeof level !== 'string' || !LEVELS.includes(level as Course['level'])) {
      throw new HttpError(400, `"level" must be one of ${LEVELS.join(', ')}`);
    }
    if (typeof duration !== 'string') {
      throw new HttpError(400, '"duration" is required, e.g. "6w"');
    }
    const course = makeCourse(randomUUID(), title.trim(), level as Course['level'], duration);
    this.courses.set(course.id, course);
    return course;
  }
}

export const seedCourses: Course[] = [
  makeCourse('crs-101', 'Intro to TypeScript', 'beginner', '4w'),
  makeCourse('crs-201', 'Node.js Services in Production', 'intermediate', '6w'),
  makeCourse('crs-301', 'Distributed Systems Bootcamp', 'advanced', '10w'),
];
