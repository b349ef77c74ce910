/*
 * One real PostgreSQL database (opsmantik_test), re-created by globalSetup for every run;
 * tests run serially (`jest -i`) because they share it.
 */
/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  // Transpile only (tsconfig has isolatedModules): `npm test` type-checks once with tsc first.
  transform: { "^.+\\.ts$": ["ts-jest", { tsconfig: "tsconfig.json", diagnostics: false }] },
  globalSetup: "<rootDir>/test/global-setup.ts",
  setupFiles: ["<rootDir>/src/polyfills.ts", "<rootDir>/test/helpers/env.ts"],
  testTimeout: 60000,
};
