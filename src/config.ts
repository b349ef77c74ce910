/*
 * Settings come from the environment, with a git-ignored .env (written once by setup) filling
 * the gaps. Every setting is checked here, at start-up: a malformed one stops the program with
 * one line naming it, instead of failing later in some request.
 */
import { existsSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import path from "node:path";

export const PROJECT_ROOT = path.resolve(__dirname, "..");
export const ENV_FILE = path.join(PROJECT_ROOT, ".env");

export class ConfigError extends Error {}

/** Reads KEY=VALUE lines (no interpolation); values already in the environment win. */
export function loadEnvFile(file = ENV_FILE): void {
  if (!existsSync(file)) return;
  for (const line of readFileSync(file, "utf8").split(/\r?\n/)) {
    const match = /^\s*([A-Z][A-Z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (!match) continue;
    const [, key, raw] = match;
    const value = raw.replace(/^"(.*)"$/, "$1").replace(/^'(.*)'$/, "$1");
    if (process.env[key] === undefined) process.env[key] = value;
  }
}

import type { GoogleSettings } from "./google/types";

export interface VaultKey {
  id: string;
  key: Buffer;
}

export interface Config {
  databaseUrl: string;
  rootDatabaseUrl: string;
  authDatabaseUrl: string;
  shadowDatabaseUrl: string | undefined;
  databaseName: string;
  roles: { owner: string; authenticator: string; visitor: string };
  port: number;
  jwt: { secret: Uint8Array | undefined; jwksUrl: URL | undefined; issuer: string | undefined; audience: string | undefined };
  vaultKeys: VaultKey[];
  allowedOrigins: string[];
  metricsToken: string | undefined;
  logLevel: string;
  ledgerRetentionDays: number;
  /** Tracker calls in flight at once; requests beyond wait and go to the database as groups. */
  ingestConcurrency: number;
  trustProxy: string | number | boolean;
  google: GoogleSettings;
}

const DEFAULT_SOCKET_DIR = "/var/run/postgresql";

function optional(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}

function postgresUrl(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const value = optional(env, name) ?? fallback;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError(`${name} is not a valid URL (expected postgres://user:password@host:port/database)`);
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new ConfigError(`${name} must start with postgres:// (got ${url.protocol}//)`);
  }
  return value;
}

export function databaseNameOf(connectionString: string): string {
  const name = decodeURIComponent(new URL(connectionString).pathname.replace(/^\//, ""));
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) {
    throw new ConfigError(`DATABASE_URL names database "${name}": use lower-case letters, digits and _`);
  }
  return name;
}

function roleName(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const value = optional(env, name) ?? fallback;
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(value)) {
    throw new ConfigError(`${name} must be a lower-case PostgreSQL role name (got "${value}")`);
  }
  return value;
}

/** A libpq-style URL for the local socket, which trust-authenticates on a developer machine. */
export function localSocketUrl(user: string, database: string, password?: string): string {
  const auth = password ? `${encodeURIComponent(user)}:${encodeURIComponent(password)}` : encodeURIComponent(user);
  return `postgres://${auth}@localhost/${database}?host=${encodeURIComponent(DEFAULT_SOCKET_DIR)}`;
}

function parseVaultKeys(raw: string | undefined): VaultKey[] {
  if (!raw) return [];
  return raw.split(",").map((entry) => {
    const match = /^([A-Za-z0-9_-]{1,32}):([A-Za-z0-9+/=]+)$/.exec(entry.trim());
    const key = match ? Buffer.from(match[2], "base64") : Buffer.alloc(0);
    if (!match || key.length !== 32) {
      throw new ConfigError("VAULT_KEYS must be a comma-separated list of id:base64 entries, each a 32-byte key");
    }
    return { id: match[1], key };
  });
}

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "::1", "[::1]", "localhost"]);

function hostPort(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const value = optional(env, name);
  if (value !== undefined && !/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(value)) {
    throw new ConfigError(`${name} must be host:port, like datamanager.googleapis.com:443 (got "${value}")`);
  }
  return value;
}

/** Google's shared credentials and, for tests, loopback endpoints; plaintext only to loopback. */
function parseGoogle(env: NodeJS.ProcessEnv): GoogleSettings {
  const dataManagerEndpoint = hostPort(env, "GOOGLE_DATAMANAGER_ENDPOINT");
  const googleAdsEndpoint = hostPort(env, "GOOGLE_ADS_API_ENDPOINT");
  const insecureText = optional(env, "GOOGLE_API_INSECURE");
  if (insecureText !== undefined && insecureText !== "1" && insecureText !== "0") throw new ConfigError("GOOGLE_API_INSECURE must be 1 or unset");
  const insecure = insecureText === "1";
  if (insecure) {
    for (const [name, endpoint] of [["GOOGLE_DATAMANAGER_ENDPOINT", dataManagerEndpoint], ["GOOGLE_ADS_API_ENDPOINT", googleAdsEndpoint]] as const) {
      const host = endpoint?.replace(/:\d+$/, "");
      if (!host || !LOOPBACK_HOSTS.has(host)) {
        throw new ConfigError(`GOOGLE_API_INSECURE=1 is only accepted when ${name} is a loopback host:port (plaintext to Google is refused)`);
      }
    }
  }
  const tokenText = optional(env, "GOOGLE_OAUTH_TOKEN_URL") ?? "https://oauth2.googleapis.com/token";
  let tokenUrl: URL;
  try {
    tokenUrl = new URL(tokenText);
  } catch {
    throw new ConfigError("GOOGLE_OAUTH_TOKEN_URL is not a valid URL");
  }
  if (tokenUrl.protocol !== "https:" && !(tokenUrl.protocol === "http:" && LOOPBACK_HOSTS.has(tokenUrl.hostname))) {
    throw new ConfigError("GOOGLE_OAUTH_TOKEN_URL must use https (plain http only for loopback hosts)");
  }
  return {
    developerToken: optional(env, "GOOGLE_ADS_DEVELOPER_TOKEN"),
    clientId: optional(env, "GOOGLE_OAUTH_CLIENT_ID"),
    clientSecret: optional(env, "GOOGLE_OAUTH_CLIENT_SECRET"),
    dataManagerEndpoint,
    googleAdsEndpoint,
    insecure,
    oauthTokenUrl: tokenUrl.toString(),
  };
}

function parseOrigins(raw: string | undefined): string[] {
  if (!raw) return [];
  return raw.split(",").map((origin) => {
    const trimmed = origin.trim().replace(/\/$/, "");
    if (!/^https?:\/\/[a-z0-9.-]+(:[0-9]{1,5})?$/i.test(trimmed)) {
      throw new ConfigError(`ALLOWED_ORIGINS holds "${trimmed}", which is not an origin like https://shop.example`);
    }
    return trimmed.toLowerCase();
  });
}

export function readConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const databaseUrl = postgresUrl(env, "DATABASE_URL", localSocketUrl("opsmantik_owner", "opsmantik"));
  const databaseName = databaseNameOf(databaseUrl);
  const roles = {
    owner: roleName(env, "DATABASE_OWNER", decodeURIComponent(new URL(databaseUrl).username) || "opsmantik_owner"),
    authenticator: roleName(env, "DATABASE_AUTHENTICATOR", "opsmantik_authenticator"),
    visitor: roleName(env, "DATABASE_VISITOR", "opsmantik_visitor"),
  };
  const rootDatabaseUrl = postgresUrl(env, "ROOT_DATABASE_URL", localSocketUrl("postgres", "postgres"));
  const authDatabaseUrl = postgresUrl(env, "AUTH_DATABASE_URL", localSocketUrl(roles.authenticator, databaseName));
  const shadow = optional(env, "SHADOW_DATABASE_URL");

  const portText = optional(env, "PORT") ?? "3000";
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) throw new ConfigError(`PORT must be a number from 0 to 65535 (got "${portText}")`);

  const jwtSecret = optional(env, "JWT_SECRET");
  if (jwtSecret !== undefined && Buffer.byteLength(jwtSecret) < 32) {
    throw new ConfigError("JWT_SECRET must be at least 32 bytes long");
  }
  const jwksText = optional(env, "JWKS_URL");
  let jwksUrl: URL | undefined;
  if (jwksText) {
    try {
      jwksUrl = new URL(jwksText);
    } catch {
      throw new ConfigError("JWKS_URL is not a valid URL");
    }
    if (jwksUrl.protocol !== "https:" && !["localhost", "127.0.0.1", "[::1]"].includes(jwksUrl.hostname)) {
      throw new ConfigError("JWKS_URL must use https (plain http is accepted only for loopback hosts)");
    }
  }

  const logLevel = optional(env, "LOG_LEVEL") ?? "info";
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent (got "${logLevel}")`);
  }

  const retentionText = optional(env, "LEDGER_RETENTION_DAYS") ?? "90";
  const ledgerRetentionDays = Number(retentionText);
  if (!/^\d+$/.test(retentionText) || ledgerRetentionDays < 90) {
    throw new ConfigError(`LEDGER_RETENTION_DAYS must be a whole number of days, at least 90 (got "${retentionText}")`);
  }

  // Default: one call per core. The database does the work, so more calls in flight than cores
  // only contend; a queue that forms instead is sent as one group commit.
  const concurrencyText = optional(env, "INGEST_CONCURRENCY") ?? String(Math.min(8, Math.max(1, availableParallelism())));
  const ingestConcurrency = Number(concurrencyText);
  if (!/^\d+$/.test(concurrencyText) || ingestConcurrency < 1 || ingestConcurrency > 8) {
    throw new ConfigError(`INGEST_CONCURRENCY must be a whole number from 1 to 8 (got "${concurrencyText}")`);
  }

  // Which proxies' X-Forwarded-For to believe for the client IP (rate limits): express's
  // `trust proxy` values — true/false, a hop count, or names/addresses/CIDRs.
  const trustText = optional(env, "TRUST_PROXY") ?? "loopback";
  let trustProxy: string | number | boolean;
  if (trustText === "true" || trustText === "false") trustProxy = trustText === "true";
  else if (/^\d{1,2}$/.test(trustText)) trustProxy = Number(trustText);
  else if (trustText.split(",").every((part) => /^(loopback|linklocal|uniquelocal|[0-9a-fA-F:.]+(\/\d{1,3})?)$/.test(part.trim()))) trustProxy = trustText;
  else throw new ConfigError(`TRUST_PROXY must be true, false, a hop count, or a list like loopback,10.0.0.0/8 (got "${trustText}")`);

  return {
    databaseUrl,
    rootDatabaseUrl,
    authDatabaseUrl,
    shadowDatabaseUrl: shadow === undefined ? undefined : postgresUrl(env, "SHADOW_DATABASE_URL", shadow),
    databaseName,
    roles,
    port,
    jwt: {
      secret: jwtSecret ? new TextEncoder().encode(jwtSecret) : undefined,
      jwksUrl,
      issuer: optional(env, "JWT_ISSUER"),
      audience: optional(env, "JWT_AUDIENCE"),
    },
    vaultKeys: parseVaultKeys(optional(env, "VAULT_KEYS")),
    allowedOrigins: parseOrigins(optional(env, "ALLOWED_ORIGINS")),
    metricsToken: optional(env, "METRICS_TOKEN"),
    logLevel,
    ledgerRetentionDays,
    ingestConcurrency,
    trustProxy,
    google: parseGoogle(env),
  };
}
