import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// `npm run dev`: Vite's dev server with the API (started by `make up`) proxied, so the portal
// talks to its own origin exactly as it does when the API serves the built files.
const api = (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env.PORTAL_API_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  plugins: [react()],
  server: {
    host: "127.0.0.1",
    proxy: { "/api": api, "/healthz": api },
  },
  build: {
    target: "es2022",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
});
