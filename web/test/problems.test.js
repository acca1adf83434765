import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fieldOfProblem } from '../src/problems.js';

const FIELDS = ['name', 'description', 'mode', 'ram-size', 'block-size', 'admit-after',
  'seq-cutoff', 'max-dirty', 'max-dirty-age-ms', 'ssd-size', 'ssd-dir']
  .map((n) => ({ name: n, words: [n] }));

// Details as hostcached writes them (src/manager/policy/policy.cc).
test('the field a detail names first', () => {
  const cases = [
    ['block-size must be a power of two between 512 and 2M bytes, not 1000', 'block-size'],
    ['ram-size must be at least one cache block (block-size 4096)', 'ram-size'],
    ["rule 'admit-after' must be an integer", 'admit-after'],
    ["rule 'mode' must be pass-through, write-around, write-through or write-back", 'mode'],
    ['max-dirty-age-ms must be between 1 and 3600000, not 0', 'max-dirty-age-ms'],
    ["max-dirty must be 0 (the driver's default, ram-size/2) or between one block and ram-size", 'max-dirty'],
    ["policy name may only use letters, digits, '.', '_' and '-'", 'name'],
    ["a policy needs a 'name' string", 'name'],
    ["'description' must be a string", 'description'],
    ['ssd-dir must be a path without commas', 'ssd-dir'],
    ['the body is not valid JSON', null],
    ['a policy cannot be renamed; create a new one instead', null],
  ];
  for (const [detail, want] of cases) assert.equal(fieldOfProblem(detail, FIELDS), want, detail);
  assert.equal(fieldOfProblem(undefined, FIELDS), null);
});
