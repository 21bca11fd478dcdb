/**
 * Vite build of the web UI that Tauri ships (`ui/dist`, loaded from disk:
 * relative asset paths, no dev server) and the Vitest setup for the pure
 * modules.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  base: './',
  esbuild: { jsx: 'automatic', jsxImportSource: 'preact' },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2021' },
  test: { include: ['src/**/*.test.ts'], environment: 'node' },
});
