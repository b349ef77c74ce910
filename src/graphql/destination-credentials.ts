/*
 * setDestinationCredentials: the one write-only field of the API. The refresh token is
 * encrypted here, in Node, and only ciphertext reaches the database (through a role-checked
 * function on the request's own connection and transaction). Nothing returns the token: the
 * payload is the destination's metadata (last four characters, who, when).
 */
import { sideEffectWithPgClientTransaction } from "postgraphile/@dataplan/pg";
import type { FieldArgs } from "postgraphile/grafast";
import { extendSchema, gql } from "postgraphile/utils";
import { InvalidCredential, storeRefreshToken } from "../vault/credentials";
import type { Vault } from "../vault/vault";

class SafeError extends Error {
  readonly extensions = { safe: true, code: "invalid_credentials" };
}

export function destinationCredentialsPlugin(vault: Vault): GraphileConfig.Plugin {
  return extendSchema((build) => {
    const executor = build.input.pgRegistry.pgExecutors.main;
    return {
      typeDefs: gql`
        input SetDestinationCredentialsInput {
          "The destination (its rowId)."
          destinationId: UUID!
          "The Google OAuth refresh token. Stored encrypted; it can never be read back."
          refreshToken: String!
        }
        type SetDestinationCredentialsPayload {
          destinationId: UUID!
          status: String!
          credentialsLast4: String!
          credentialsUpdatedAt: Datetime!
        }
        extend type Mutation {
          "Sets a destination's Google credentials (admin or owner). Write-only."
          setDestinationCredentials(input: SetDestinationCredentialsInput!): SetDestinationCredentialsPayload
        }
      `,
      plans: {
        Mutation: {
          setDestinationCredentials(_$root: unknown, fieldArgs: FieldArgs) {
            const $input = fieldArgs.getRaw("input");
            return sideEffectWithPgClientTransaction(executor, $input, async (client, input) => {
              const { destinationId, refreshToken } = input as { destinationId: string; refreshToken: string };
              try {
                const destination = await storeRefreshToken((text, values) => client.query({ text, values }),
                  vault, destinationId, refreshToken);
                return {
                  destinationId: destination.id, status: destination.status,
                  credentialsLast4: destination.credentials_last4, credentialsUpdatedAt: destination.credentials_updated_at,
                };
              } catch (error) {
                if (error instanceof InvalidCredential) throw new SafeError(error.message);
                throw error;
              }
            });
          },
        },
      },
    };
  });
}
