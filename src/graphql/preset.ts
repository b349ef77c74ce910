/*
 * The GraphQL API: PostGraphile 5 over app_public only, run as the visitor role with the
 * request's identity in transaction-local settings, so RLS decides what every query sees.
 *
 * - No generic create/update/delete mutations: every write is an app_public function that
 *   checks the caller's role and is audited.
 * - Aggregates are off by default and switched on per table with `@behavior +aggregates`.
 * - Connection filters are on; errors are masked to our stable codes.
 */
import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import type pg from "pg";
import { makePgService } from "postgraphile/adaptors/pg";
import { GraphQLError } from "postgraphile/graphql";
import type {} from "postgraphile/grafserv/express/v4";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { PostGraphileConnectionFilterPreset } from "postgraphile-plugin-connection-filter";
import type { Config } from "../config";
import { recordDenial } from "../db/denials";
import { publicDatabaseError } from "../db/errors";
import { pgSettingsFor } from "../http/auth-context";
import { logger } from "../logger";
import { Vault } from "../vault/vault";
import { destinationCredentialsPlugin } from "./destination-credentials";
import { EXECUTION_TIMEOUT_MS, pageSizeErrors, validationRules } from "./limits";

const QueryLimitsPlugin: GraphileConfig.Plugin = {
  name: "OpsMantikQueryLimitsPlugin",
  version: "1.0.0",
  grafserv: {
    middleware: {
      setPreset(next, event) {
        event.validationRules.push(...validationRules);
        return next();
      },
    },
  },
  grafast: {
    middleware: {
      // Answered as a result with errors, as validation errors are: an error thrown from here
      // would reach the client the same, but grafserv would print it with its stack trace.
      execute(next, event) {
        const [first] = pageSizeErrors(event.args.schema, event.args.document, event.args.variableValues);
        if (first) return { errors: [first] };
        return next();
      },
    },
  },
};

export function makeMaskError(ownerPool: pg.Pool | undefined) {
  return (error: GraphQLError): GraphQLError => {
    const original = error.originalError as (Error & { code?: string; detail?: string }) | undefined;
    if (!original) return error; // parse and validation errors carry no internals
    const options = { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, originalError: original };
    const known = publicDatabaseError(original);
    if (known) {
      if (original.code === "OM403" && ownerPool) void recordDenial(ownerPool, original.detail);
      return new GraphQLError(known.message, { ...options, extensions: { code: known.code } });
    }
    if ((original as { extensions?: { safe?: boolean } }).extensions?.safe || original.name === "SafeError") return error;
    logger.error({ err: original.message, code: original.code, path: error.path }, "GraphQL request failed");
    return new GraphQLError("The request could not be completed.", { ...options, extensions: { code: "internal" } });
  };
}

export function makePreset(config: Config, pools: { auth: pg.Pool; owner?: pg.Pool }): GraphileConfig.Preset {
  return {
    extends: [PostGraphileAmberPreset, PgAggregatesPreset, PostGraphileConnectionFilterPreset],
    plugins: [QueryLimitsPlugin, destinationCredentialsPlugin(new Vault(config.vaultKeys))],
    pgServices: [makePgService({ pool: pools.auth, schemas: ["app_public"] })],
    schema: {
      defaultBehavior: "-insert -update -delete -aggregates -aggregates:filterBy -aggregates:orderBy",
      connectionFilterAllowNullInput: false,
      connectionFilterAllowEmptyObjectInput: false,
      pgForbidSetofFunctionsToReturnNull: true,
    },
    grafast: {
      explain: false,
      timeouts: { execution: EXECUTION_TIMEOUT_MS },
      context(requestContext) {
        const req = requestContext.expressv4?.req;
        return { pgSettings: pgSettingsFor(config, req?.auth) };
      },
    },
    grafserv: {
      graphqlPath: "/graphql",
      graphiqlPath: "/graphiql",
      graphiql: true,
      graphiqlOnGraphQLGET: false,
      websockets: false,
      maxRequestLength: 100_000,
      maskError: makeMaskError(pools.owner),
    },
  };
}
