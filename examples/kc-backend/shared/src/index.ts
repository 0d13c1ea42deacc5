export * from './config';
export * from './logger';
export * from './http';
export * from './health';
