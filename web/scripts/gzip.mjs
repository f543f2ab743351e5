// Writes a `.gz` twin of every compressible file in dist/ (the binary serves it to
// clients that accept gzip) and prints the gzip size of the initial JavaScript.
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;
const compressible = /\.(js|css|html|svg|json|txt)$/;
function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}
let jsGzip = 0;
for (const file of walk(dist)) {
  if (!compressible.test(file)) continue;
  const gz = gzipSync(readFileSync(file), { level: 9 });
  writeFileSync(`${file}.gz`, gz);
  if (file.endsWith(".js")) jsGzip += gz.length;
}
console.log(`gzip: all JavaScript ${(jsGzip / 1024).toFixed(1)} KiB (budget for the initial load: 500 KiB)`);
