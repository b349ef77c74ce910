/*
 * One real PostgreSQL database (opsmantik_test), re-created by globalSetup for every run;
 * tests run serially (`jest -i`) because they share it.
 */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: { "^.+\\.ts$": ["@swc/jest", { jsc: { target: "es2022", parser: { syntax: "typescript" } }, module: { type: "commonjs" } }] },
  globalSetup: "<rootDir>/test/global-setup.ts",
  setupFiles: ["<rootDir>/src/polyfills.ts", "<rootDir>/test/helpers/env.ts"],
  testTimeout: 60000,
};
