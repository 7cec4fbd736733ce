// A small, dependency-free renderer of the OpenAPI document (works offline).
const resolve = (doc, s) => (s && s.$ref) ? resolve(doc, s.$ref.split('/').slice(1).reduce((o, k) => o[k], doc)) : s;
const example = (doc, s, depth = 0) => {
  s = resolve(doc, s) || {};
  if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
  if (s.example !== undefined) return s.example;
  if (s.default !== undefined && s.default !== null) return s.default;
  if (s.const !== undefined) return s.const;
  if (depth > 4) return null;
  // One of several shapes (an enum's values, a value or null): the first that is not null.
  const some = (s.oneOf || s.anyOf || []).find(b => resolve(doc, b).type !== 'null');
  if (some && !s.properties) return example(doc, some, depth + 1);
  const t = Array.isArray(s.type) ? s.type[0] : s.type;
  if (t === 'object' || s.properties) { const o = {}; for (const [k, v] of Object.entries(s.properties || {})) o[k] = example(doc, v, depth + 1); return o; }
  if (t === 'array') return [example(doc, s.items, depth + 1)];
  if (s.enum) return s.enum[0];
  return { integer: 0, boolean: false, number: 0 }[t] ?? (s.format === 'date-time' ? '2026-01-01T09:00:00Z' : 'string');
};
// The document's text goes into markup escaped: a description is never interpreted as HTML.
const esc = (v) => String(v).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
fetch('/api/openapi.json').then(r => r.json()).then(doc => {
  document.getElementById('intro').textContent = doc.info.description;
  const ops = document.getElementById('ops');
  for (const [path, methods] of Object.entries(doc.paths)) for (const [m, op] of Object.entries(methods)) {
    const d = document.createElement('details');
    const req = op.requestBody ? '<h4>Request body</h4><pre>' + esc(JSON.stringify(example(doc, op.requestBody.content['application/json'].schema), null, 2)) + '</pre>' : '';
    const res = Object.entries(op.responses).map(([code, r]) => {
      const c = r.content && (r.content['application/json'] || r.content['text/event-stream']);
      return '<h4>' + esc(code + ' ' + r.description) + '</h4>' + (c ? '<pre>' + esc(JSON.stringify(example(doc, c.schema), null, 2)) + '</pre>' : '');
    }).join('');
    d.innerHTML = '<summary><span class="m ' + esc(m) + '">' + esc(m.toUpperCase()) + '</span><code></code><span></span><span class="tag"></span></summary><div class="body">' + req + res + '</div>';
    d.querySelector('code').textContent = path;
    d.querySelector('summary span:nth-of-type(2)').textContent = op.summary;
    d.querySelector('.tag').textContent = (op.tags || []).join(', ');
    ops.appendChild(d);
  }
});
