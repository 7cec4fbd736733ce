// Contract checks run by scripts/check-contracts:
// 1. schemas/asyncapi.json parses and validates as an AsyncAPI 3 document (@asyncapi/parser),
//    with no error-level diagnostics.
// 2. Every event recorded by the end-to-end tests (target/contract-samples/*.ndjson: one
//    {"subject", "type", "version", "data"} per line, as published on NATS) validates against
//    its schema in schemas/events/, and every recorded type has one.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser } from '@asyncapi/parser';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
let failed = false;
const fail = (msg) => { console.error(`FAIL ${msg}`); failed = true; };

const doc = fs.readFileSync(path.join(root, 'schemas/asyncapi.json'), 'utf8');
const { document, diagnostics } = await new Parser().parse(doc);
const errors = diagnostics.filter((d) => d.severity === 0);
for (const e of errors) fail(`asyncapi.json ${e.path.join('.')}: ${e.message}`);
if (!document) fail('asyncapi.json did not parse');
else console.log(`asyncapi.json: AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages, ${errors.length} errors`);

const samplesDir = path.join(root, 'target/contract-samples');
const files = fs.existsSync(samplesDir) ? fs.readdirSync(samplesDir).filter((f) => f.endsWith('.ndjson')) : [];
if (files.length === 0) {
  fail('no recorded events in target/contract-samples/ (the end-to-end tests write them; run scripts/test)');
} else {
  const ajv = new Ajv({ allErrors: true, strict: false });
  addFormats(ajv);
  const validators = new Map();
  const counts = new Map();
  let n = 0;
  for (const f of files) {
    for (const line of fs.readFileSync(path.join(samplesDir, f), 'utf8').split('\n').filter(Boolean)) {
      const e = JSON.parse(line);
      const category = e.subject.split('.')[3];
      const file = path.join(root, 'schemas/events', category, `${e.type}.v${e.version}.json`);
      if (!validators.has(file)) {
        if (!fs.existsSync(file)) { fail(`${f}: ${e.subject}: no schema ${path.relative(root, file)}`); validators.set(file, null); continue; }
        validators.set(file, ajv.compile(JSON.parse(fs.readFileSync(file, 'utf8'))));
      }
      const validate = validators.get(file);
      if (!validate) continue;
      n += 1;
      counts.set(e.type, (counts.get(e.type) || 0) + 1);
      if (!validate(e.data)) fail(`${f}: ${e.subject}: ${ajv.errorsText(validate.errors)}: ${JSON.stringify(e.data)}`);
    }
  }
  console.log(`recorded events: ${n} validated against their schemas, ${counts.size} types: ${[...counts.keys()].sort().join(', ')}`);
}
process.exit(failed ? 1 : 0);
