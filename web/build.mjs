// Builds the dashboard into OUT (argument, default ../build/web): one
// JavaScript bundle and one stylesheet with content hashes in their names
// under assets/ (hostcached serves them as immutable), index.html and
// favicon.svg at the top (served no-cache).  Everything comes from
// node_modules (npm ci): no CDN, nothing fetched at run time.
//
// The new tree is built beside OUT and renamed over it, so a running
// hostcached never serves half a build.
import { build } from 'esbuild';
import { cpSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || join(here, '..', 'build', 'web'));
const tmp = `${out}.tmp-${process.pid}`;
rmSync(tmp, { recursive: true, force: true });
mkdirSync(join(tmp, 'assets'), { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.js' },
  bundle: true,
  format: 'esm',
  target: ['chrome109', 'firefox115', 'safari16'],
  minify: true,
  sourcemap: false,
  legalComments: 'eof',
  outdir: join(tmp, 'assets'),
  entryNames: '[name]-[hash]',
  assetNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
});

const outputs = Object.keys(result.metafile.outputs).map((p) => resolve(here, p));
const js = outputs.filter((p) => p.endsWith('.js'));
const css = outputs.filter((p) => p.endsWith('.css'));
if (js.length !== 1 || css.length !== 1) {
  throw new Error(`expected one .js and one .css bundle, got ${outputs.join(', ')}`);
}
const rel = (p) => relative(tmp, p).split('\\').join('/');
const tags = [
  `<link rel="stylesheet" href="${rel(css[0])}">`,
  `<script type="module" src="${rel(js[0])}"></script>`,
].join('\n  ');
const template = readFileSync(join(here, 'index.html'), 'utf8');
if (!template.includes('<!-- assets -->')) throw new Error('index.html lost its <!-- assets --> marker');
writeFileSync(join(tmp, 'index.html'), template.replace('<!-- assets -->', tags));
cpSync(join(here, 'favicon.svg'), join(tmp, 'favicon.svg'));

rmSync(out, { recursive: true, force: true });
mkdirSync(dirname(out), { recursive: true });
renameSync(tmp, out);
const sizes = [...js, ...css].map((p) => `${basename(p)} ${readFileSync(join(out, 'assets', basename(p))).length} B`);
console.log(`dashboard built in ${out}: ${sizes.join(', ')}`);
