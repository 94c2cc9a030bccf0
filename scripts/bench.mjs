#!/usr/bin/env node
/**
 * `npm run bench` lives in scripts/bench/ (index.mjs is the entry, one file
 * per section); this file stays so that `node scripts/bench.mjs [--quick]`
 * keeps working (test/e2e/bench.test.ts runs it).
 */
import './bench/index.mjs';
