#!/usr/bin/env node
// Renders services/Dockerfile.template into services/<name>/Dockerfile for
// every service directory that has a package.json.
//
// Placeholders:
//   <SERVICE_NAME>     directory name under services/ (e.g. student-service)
//   <SERVICE_PACKAGE>  package.json "name" (e.g. @kodingcaravan/student-service)
//   <SERVICE_PORT>     package.json "config.port" (e.g. 3001)
//
// Usage:
//   node scripts/generate-dockerfiles.js           write all Dockerfiles
//   node scripts/generate-dockerfiles.js --check   exit 1 if any is out of date
'use strict';

const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const servicesDir = path.join(root, 'services');
const templatePath = path.join(servicesDir, 'Dockerfile.template');
const check = process.argv.includes('--check');

function render(template, values) {
  let out = template;
  for (const [key, value] of Object.entries(values)) {
    out = out.split(`<${key}>`).join(String(value));
  }
  const leftover = out.match(/<SERVICE_[A-Z_]+>/);
  if (leftover) throw new Error(`unknown placeholder ${leftover[0]} in ${templatePath}`);
  return out;
}

function main() {
  const template = fs.readFileSync(templatePath, 'utf8');
  const names = fs
    .readdirSync(servicesDir, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(servicesDir, d.name, 'package.json')))
    .map((d) => d.name)
    .sort();

  const ports = new Map();
  let stale = 0;
  for (const name of names) {
    const pkg = JSON.parse(fs.readFileSync(path.join(servicesDir, name, 'package.json'), 'utf8'));
    const port = pkg.config && pkg.config.port;
    if (!pkg.name) throw new Error(`services/${name}/package.json has no "name"`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new Error(`services/${name}/package.json needs an integer "config.port"`);
    }
    if (ports.has(port)) throw new Error(`port ${port} is used by both ${ports.get(port)} and ${name}`);
    ports.set(port, name);

    const rendered = render(template, { SERVICE_NAME: name, SERVICE_PACKAGE: pkg.name, SERVICE_PORT: port });
    const target = path.join(servicesDir, name, 'Dockerfile');
    const current = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : null;
    if (current === rendered) {
      console.log(`up to date  services/${name}/Dockerfile`);
    } else if (check) {
      console.error(`STALE       services/${name}/Dockerfile`);
      stale++;
    } else {
      fs.writeFileSync(target, rendered);
      console.log(`wrote       services/${name}/Dockerfile (${pkg.name}, port ${port})`);
    }
  }
  if (stale > 0) {
    console.error(`${stale} Dockerfile(s) out of date: run node scripts/generate-dockerfiles.js`);
    process.exit(1);
  }
}

main();
