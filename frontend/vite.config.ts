/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// Built files go straight into the Python package so `kcircuits serve` serves them same-origin.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../backend/kcircuits/static",
    emptyOutDir: true,
    chunkSizeWarningLimit: 5000,
    // CSP is script-src 'self': no inline module preload polyfill.
    modulePreload: { polyfill: false },
  },
  server: { proxy: { "/api": "http://127.0.0.1:8000", "/readyz": "http://127.0.0.1:8000" } },
  test: { environment: "node", include: ["tests/**/*.test.ts"] },
});
