// Builds dist/: ESM + .d.ts (tsc), CommonJS (esbuild, file by file) and one ESM bundle for browsers.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
process.chdir(root);
rmSync("dist", { recursive: true, force: true });

// 1. ESM for Node and bundlers, with declarations
execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });

// 2. CommonJS: the same modules; dist/cjs/package.json makes its .js (and .d.ts) CommonJS
const sources = readdirSync("src").filter((f) => f.endsWith(".ts") && !f.endsWith(".browser.ts"));
await build({
  entryPoints: sources.map((f) => `src/${f}`),
  outdir: "dist/cjs",
  format: "cjs",
  platform: "node",
  target: "node20",
  sourcemap: true,
  logLevel: "warning",
});
writeFileSync("dist/cjs/package.json", JSON.stringify({ type: "commonjs" }) + "\n");
for (const file of readdirSync("dist/esm").filter((f) => f.endsWith(".d.ts"))) {
  cpSync(`dist/esm/${file}`, `dist/cjs/${file}`);
}

// 3. Browsers: one self-contained ES module (SDK and zod inside), stdio swapped for its stand-in
const browserStdio = {
  name: "browser-stdio",
  setup(b) {
    b.onResolve({ filter: /^\.\/stdio\.js$/ }, () => ({ path: `${root}src/stdio.browser.ts` }));
  },
};
mkdirSync("dist/browser", { recursive: true });
await build({
  entryPoints: ["src/index.ts"],
  outfile: "dist/browser/index.js",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  minify: true,
  keepNames: true, // error classes keep their names (`err.name === "LeaseLost"`)
  sourcemap: true,
  plugins: [browserStdio],
  logLevel: "warning",
});
writeFileSync("dist/browser/index.d.ts", `export * from "../esm/index.js";\n`);
