// Validates an AsyncAPI document with the official parser: exits non-zero
// if the parser reports an error (hints such as "a newer version exists"
// are printed but do not fail).
//   node tests/contract/check-asyncapi.mjs <asyncapi.json>
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

// The parser is installed under target/contract-node (see run.sh).
const require = createRequire(path.resolve(process.env.ASYNCAPI_PARSER_DIR, 'package.json'));
const { Parser } = require('@asyncapi/parser');

const text = fs.readFileSync(process.argv[2], 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
const severities = ['error', 'warning', 'info', 'hint'];
let errors = 0;
for (const d of diagnostics) {
    console.log(`${severities[d.severity] ?? d.severity} ${d.code} at ${JSON.stringify(d.path)}: ${d.message}`);
    if (d.severity === 0) errors += 1;
}
if (!document || errors > 0) {
    console.log('the AsyncAPI document is invalid');
    process.exit(1);
}
console.log(`valid AsyncAPI ${document.version()}: ${document.allMessages().length} messages, ${document.operations().length} operations`);
