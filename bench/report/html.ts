// The HTML report: one self-contained file (no network, nothing else to copy) with uPlot, the
// page script and the tool's result inlined. The result is embedded as the same object the
// tool writes to its --out JSON, so the page and the file cannot disagree.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { projectRoot } from '../../test/support/env.js';
import type { ReportData } from './report-types.js';

const require = createRequire(import.meta.url);

/** A file's text, refusing what would end the <script> or <style> element it is inlined in. */
function inlinable(path: string, closing: string): string {
  const text = readFileSync(path, 'utf8');
  if (text.toLowerCase().includes(closing)) throw new Error(`${path} contains ${closing} and cannot be inlined`);
  return text;
}

/** JSON inside <script type="application/json">: `<` escaped, so no string in it can close the element. */
export function embeddedJson(data: unknown): string {
  return JSON.stringify(data).replace(/</g, '\\u003c');
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function renderReport(data: ReportData): string {
  const uplotJs = inlinable(require.resolve('uplot/dist/uPlot.iife.min.js'), '</script');
  const uplotCss = inlinable(require.resolve('uplot/dist/uPlot.min.css'), '</style');
  // Compiled from browser/page.ts by the second step of `npm run build`.
  const pageJs = inlinable(fileURLToPath(new URL('./browser/page.js', import.meta.url)), '</script').replace(/\n\/\/# sourceMappingURL=.*$/m, '');
  const pageCss = inlinable(path.join(projectRoot, 'bench/report/browser/page.css'), '</style');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeHtml(data.title)}</title>
<style>${uplotCss}</style>
<style>${pageCss}</style>
</head>
<body>
<main id="report"><noscript>This report draws its charts with JavaScript.</noscript></main>
<script type="application/json" id="report-data">${embeddedJson(data)}</script>
<script>${uplotJs}</script>
<script type="module">${pageJs}</script>
</body>
</html>
`;
}

export function writeReport(file: string, data: ReportData): void {
  writeFileSync(file, renderReport(data));
}
