/*
 * `npx opsmantik <command>`: the admin CLI. Every command takes --help and --json; with --json
 * it prints exactly one JSON object on stdout (errors too), so scripts never parse prose.
 */
import { ConfigError, loadEnvFile } from "../config";
import { SetupError } from "../setup/setup";
import { Command, CommandError, parse, UsageError } from "./command";
import { callSecretRetire, callSecretRotate } from "./commands/call-secret";
import { migrateCommand, setupCommand } from "./commands/database";
import { erasureRequest } from "./commands/erasure";
import { destinationCreate, exportCredentialCreate, exportCredentialRevoke, vaultRotate } from "./commands/delivery";
import { schemaDump } from "./commands/schema";
import { serve, start, worker } from "./commands/run";
import { apiKeyCreate, apiKeyRevoke, siteCreate, token, userCreate } from "./commands/tenancy";

const COMMANDS: Command[] = [
  start, serve, worker, setupCommand, migrateCommand,
  userCreate, siteCreate, token, apiKeyCreate, apiKeyRevoke, callSecretRotate, callSecretRetire,
  destinationCreate, exportCredentialCreate, exportCredentialRevoke, vaultRotate, erasureRequest, schemaDump,
];

function overview(): string {
  const width = Math.max(...COMMANDS.map((c) => c.words.join(" ").length));
  return [
    "OpsMantik admin CLI",
    "",
    "usage: npx opsmantik <command> [options] [--json] [--help]",
    "",
    "commands:",
    ...COMMANDS.map((c) => `  ${c.words.join(" ").padEnd(width)}  ${c.summary}`),
    "",
    "Settings come from the environment and .env (see README.md). `npx opsmantik <command> --help` for details.",
  ].join("\n");
}

function helpFor(command: Command): string {
  const options = Object.keys(command.options);
  return [command.summary, "", `usage: ${command.usage}`, "",
    options.length ? `options: ${options.map((o) => `--${o}`).join(", ")}, --json, --help` : "options: --json, --help"].join("\n");
}

function findCommand(argv: string[]): { command?: Command; rest: string[] } {
  for (const command of [...COMMANDS].sort((a, b) => b.words.length - a.words.length)) {
    if (command.words.every((word, i) => argv[i] === word)) return { command, rest: argv.slice(command.words.length) };
  }
  return { rest: argv };
}

async function main(argv: string[]): Promise<number> {
  const json = argv.includes("--json");
  const fail = (code: string, message: string, exitCode = 1) => {
    if (json) process.stdout.write(JSON.stringify({ error: code, message }) + "\n");
    process.stderr.write(`opsmantik: ${message}\n`);
    return exitCode;
  };
  if (argv.length === 0 || argv[0] === "--help" || argv[0] === "-h" || argv[0] === "help") {
    process.stdout.write(overview() + "\n");
    return 0;
  }
  const { command, rest } = findCommand(argv);
  if (!command) return fail("unknown_command", `unknown command "${argv.filter((a) => !a.startsWith("-")).join(" ")}": run \`npx opsmantik --help\``, 2);
  try {
    const values = parse(command, rest);
    if (values.help) {
      process.stdout.write(helpFor(command) + "\n");
      return 0;
    }
    loadEnvFile();
    const result = await command.run(values, { log: (line) => process.stderr.write(`${line}\n`) });
    process.stdout.write(json ? JSON.stringify(result.json) + "\n" : result.text.map((l) => `${l}\n`).join(""));
    return 0;
  } catch (error) {
    if (error instanceof UsageError) return fail("invalid_usage", `${error.message}\nusage: ${command.usage}`, 2);
    if ((error as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      return fail("invalid_usage", `${(error as Error).message}\nusage: ${command.usage}`, 2);
    }
    if (error instanceof CommandError) return fail(error.code, error.message);
    if (error instanceof ConfigError || error instanceof SetupError) return fail("configuration", error.message);
    return fail("internal", `unexpected failure: ${(error as Error).message}`);
  }
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
