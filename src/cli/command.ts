/*
 * The shape every CLI command shares: its words ("api-key create"), its options, a help text,
 * and a run function that returns the object printed with --json (and as lines otherwise).
 */
import { parseArgs, ParseArgsConfig } from "node:util";
import { isUuid } from "../uuid";

export type Options = NonNullable<ParseArgsConfig["options"]>;
export type Values = Record<string, string | boolean | string[] | undefined>;

export class UsageError extends Error {}
/** A failure the user can act on; printed as one line, never with a stack. */
export class CommandError extends Error {
  constructor(public readonly code: string, message: string) {
    super(message);
  }
}

export interface Command {
  words: string[];
  summary: string;
  usage: string;
  options: Options;
  /** Returns what --json prints; `text` is printed otherwise. */
  run(values: Values, io: { log: (line: string) => void }): Promise<{ json: Record<string, unknown>; text: string[] }>;
}

export function parse(command: Command, argv: string[]): Values {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { ...command.options, json: { type: "boolean" }, help: { type: "boolean", short: "h" } },
    allowPositionals: true,
    strict: true,
  });
  if (positionals.length > 0) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  return values as Values;
}

export function required(values: Values, name: string): string {
  const value = values[name];
  if (typeof value !== "string" || value.trim() === "") throw new UsageError(`--${name} is required`);
  return value.trim();
}

export function optionalInteger(values: Values, name: string, { min = 0 } = {}): number | undefined {
  const value = values[name];
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !/^\d+$/.test(value) || Number(value) < min) {
    throw new UsageError(`--${name} must be a whole number${min > 0 ? ` of at least ${min}` : ""}`);
  }
  return Number(value);
}


export function requiredUuid(values: Values, name: string): string {
  const value = required(values, name);
  if (!isUuid(value)) throw new UsageError(`--${name} must be a UUID`);
  return value.toLowerCase();
}
