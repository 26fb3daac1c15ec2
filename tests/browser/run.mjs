// Runs zipIQ's browser tests: every tests/browser/*.test.mjs, one file at a time, each in its own process, with
// node's built-in test runner (node:test). A test file drives Debian's Chromium through playwright-core and starts
// its own zipIQ server from ZIPIQ_BIN with the helpers in harness.mjs.
//
//   node tests/browser/run.mjs [FILTER...]
//
// FILTERs are substrings of test names (node's --test-name-pattern); with none, every test runs. Prints the spec
// report, then one closing line `browser: N passed, N failed, N skipped`. Exit code 0 only when nothing failed and at
// least one test ran (or a filter matched nothing).

import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';

const here = path.dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2).filter((a) => a !== '--');
const files = readdirSync(here)
  .filter((name) => name.endsWith('.test.mjs'))
  .sort()
  .map((name) => path.join(here, name));

if (files.length === 0) {
  console.error(`no *.test.mjs files in ${here}`);
  process.exit(1);
}

const timeout = Number.parseInt(process.env.ZIPIQ_TEST_BROWSER_TIMEOUT_MS ?? '180000', 10);
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const counts = { passed: 0, failed: 0, skipped: 0 };

const stream = run({
  files,
  concurrency: 1,
  timeout,
  ...(filters.length > 0 ? { testNamePatterns: filters.map((f) => new RegExp(escape(f))) } : {}),
});
// Count top-level tests only (subtests belong to their parent); a file that fails to load is a failure too.
stream.on('test:pass', (data) => {
  if (data.nesting !== 0) return;
  if (data.skip !== undefined || data.todo !== undefined) counts.skipped += 1;
  else counts.passed += 1;
});
stream.on('test:fail', (data) => {
  if (data.nesting === 0) counts.failed += 1;
});

const report = stream.compose(new spec());
report.pipe(process.stdout);
await new Promise((resolve) => report.on('end', resolve));

console.log(`browser: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped`);
if (counts.failed > 0) process.exitCode = 1;
else if (counts.passed === 0 && filters.length === 0) {
  console.error('no browser test ran');
  process.exitCode = 1;
}
