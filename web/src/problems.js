// Which form field an API error is about.  The daemon's 400 details name
// the rule or field in words ("block-size must be a power of two ...",
// "rule 'admit-after' must be an integer", "policy name may only use ...");
// the form shows the detail next to the field named first.  Pure,
// unit-tested in test/problems.test.js.

// detail: the problem's text; fields: [{name, words: ['block-size']}].
// Returns the name of the field whose word appears first (as a whole word:
// 'max-dirty' does not match inside 'max-dirty-age-ms'), or null.
export function fieldOfProblem(detail, fields) {
  if (typeof detail !== 'string') return null;
  let best = null;
  let bestAt = Infinity;
  for (const f of fields) {
    for (const w of f.words) {
      const at = wordIndex(detail, w);
      if (at >= 0 && at < bestAt) {
        best = f.name;
        bestAt = at;
      }
    }
  }
  return best;
}

function wordIndex(text, word) {
  const wordChar = /[A-Za-z0-9_-]/;
  let from = 0;
  for (;;) {
    const at = text.indexOf(word, from);
    if (at < 0) return -1;
    const before = at === 0 ? '' : text[at - 1];
    const after = text[at + word.length] || '';
    if (!wordChar.test(before) && !wordChar.test(after)) return at;
    from = at + 1;
  }
}
