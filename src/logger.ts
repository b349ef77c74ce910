/*
 * Structured logs (pino, JSON lines). Secrets never reach a log: requests are logged by method,
 * path and status only, and these paths are redacted wherever they appear.
 */
import pino from "pino";

export const logger = pino({
  level: process.env.LOG_LEVEL ?? "info",
  redact: {
    paths: ["authorization", "*.authorization", "headers.authorization", "password", "*.password", "token", "*.token", "key", "*.key", "secret", "*.secret"],
    censor: "[redacted]",
  },
});
