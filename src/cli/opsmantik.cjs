#!/usr/bin/env node
// Entry point of `npx opsmantik` and the npm scripts: compiles TypeScript on the fly with tsx.
// Grafast asks for GRAPHILE_ENV; production mode unless a developer opts in.
process.env.GRAPHILE_ENV ??= "production";
require("tsx/cjs/api").register();
require("../polyfills.ts");
require("./main.ts");
