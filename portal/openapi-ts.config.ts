import { defineConfig } from "@hey-api/openapi-ts";

// The portal's typed client, generated from the API's own OpenAPI document (`make portal-client`
// dumps it from create_app() without a server, then runs this).
export default defineConfig({
  input: "./openapi.json",
  output: { path: "./src/client", postProcess: [] },
  plugins: ["@hey-api/client-fetch", "@hey-api/typescript", "@hey-api/sdk"],
});
