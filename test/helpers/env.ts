/*
 * The environment every test (and the global setup) runs with: its own database on the local
 * socket and fixed, test-only secrets. Nothing is read from .env.
 */
// OPSMANTIK_TEST_DATABASE lets two suites run side by side on one server without sharing a database.
export const TEST_DATABASE = process.env.OPSMANTIK_TEST_DATABASE ?? "opsmantik_test";
export const TEST_JWT_SECRET = "test-only-jwt-secret-that-is-long-enough-0123456789";
const socket = "host=%2Fvar%2Frun%2Fpostgresql";

export function testEnv(database = TEST_DATABASE): Record<string, string> {
  return {
    DATABASE_URL: `postgres://opsmantik_owner@localhost/${database}?${socket}`,
    AUTH_DATABASE_URL: `postgres://opsmantik_authenticator@localhost/${database}?${socket}`,
    ROOT_DATABASE_URL: process.env.TEST_ROOT_DATABASE_URL ?? `postgres://postgres@localhost/postgres?${socket}`,
    JWT_SECRET: TEST_JWT_SECRET,
    VAULT_KEYS: `test1:${Buffer.alloc(32, 7).toString("base64")}`,
    GRAPHILE_ENV: "production",
    LOG_LEVEL: "silent",
    PORT: "0",
  };
}

for (const name of ["JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE", "ALLOWED_ORIGINS", "METRICS_TOKEN", "SHADOW_DATABASE_URL",
  "DATABASE_OWNER", "DATABASE_AUTHENTICATOR", "DATABASE_VISITOR", "OWNER_PASSWORD", "AUTHENTICATOR_PASSWORD",
  "GOOGLE_ADS_DEVELOPER_TOKEN", "GOOGLE_OAUTH_CLIENT_ID", "GOOGLE_OAUTH_CLIENT_SECRET", "GOOGLE_DATAMANAGER_ENDPOINT",
  "GOOGLE_ADS_API_ENDPOINT", "GOOGLE_API_INSECURE", "GOOGLE_OAUTH_TOKEN_URL"]) {
  delete process.env[name];
}
Object.assign(process.env, testEnv());
