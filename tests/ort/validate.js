// Validates JSON documents against a JSON Schema (draft 2020-12) with Ajv.
//   node tests/ort/validate.js SCHEMA.json DOC.json [DOC.json ...]
// Exit 0 when every document is valid; otherwise prints each error with its JSON pointer and exits 1.
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv2020 = require(path.join(__dirname, 'node_modules', 'ajv', 'dist', '2020')).default;

const [schemaPath, ...docs] = process.argv.slice(2);
if (!schemaPath || docs.length === 0) {
  console.error('usage: validate.js SCHEMA.json DOC.json [DOC.json ...]');
  process.exit(2);
}
const ajv = new Ajv2020({allErrors: true, strict: true});
const validate = ajv.compile(JSON.parse(fs.readFileSync(schemaPath, 'utf8')));
let ok = true;
for (const doc of docs) {
  if (!validate(JSON.parse(fs.readFileSync(doc, 'utf8')))) {
    ok = false;
    for (const e of validate.errors) console.log(`${doc}: ${e.instancePath || '/'} ${e.message}`);
  }
}
process.exit(ok ? 0 : 1);
