/*
 * Who is calling, as established by the authenticate middleware, and how that becomes the
 * transaction-local settings every GraphQL query runs with.
 */
import type { Config } from "../config";

export interface RequestAuth {
  userId?: string;
  apiKeyId?: string;
  siteId?: string;
  role?: string;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      auth?: RequestAuth;
    }
  }
}

export function pgSettingsFor(config: Config, auth: RequestAuth | undefined): Record<string, string> {
  return {
    role: config.roles.visitor,
    "app.user_id": auth?.userId ?? "",
    "app.api_key_id": auth?.apiKeyId ?? "",
  };
}
