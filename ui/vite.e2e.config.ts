/**
 * Builds the mocked-IPC harness (e2e/harness.html) into `dist-e2e`, apart
 * from the `dist` that Tauri ships, for the Playwright tests and the filter
 * benchmark.
 */
import { resolve } from 'node:path';
import { defineConfig } from 'vite';

export default defineConfig({
  base: './',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: {
    outDir: 'dist-e2e',
    emptyOutDir: true,
    target: 'es2021',
    rollupOptions: { input: { harness: resolve(__dirname, 'e2e/harness.html') } },
  },
});
