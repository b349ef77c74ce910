/*
 * Query limits. A dashboard query is a handful of levels deep and pages through at most a few
 * hundred rows; anything far beyond that is a mistake or an attack. Three bounds together cap
 * the work one request can ask for: nesting depth (and depth of nested lists), the size of a
 * page (`first`/`last`, literal or variable), and grafast's execution timeout.
 */
import { depthLimit } from "@graphile/depth-limit";
import { ASTVisitor, DocumentNode, GraphQLError, GraphQLSchema, Kind, validate, ValidationContext, ValidationRule, valueFromASTUntyped } from "postgraphile/graphql";

export const MAX_DEPTH = 12;
export const MAX_LIST_DEPTH = 4;
export const MAX_PAGE_SIZE = 1000;
export const MAX_PAGE_PRODUCT = 100_000;
export const ASSUMED_PAGE_SIZE = 100;
export const EXECUTION_TIMEOUT_MS = 15_000;

/**
 * Multiplies the page sizes of nested connections: `sites(first: 100) { auditLogs(first: 1000) }`
 * can return 100,000 rows. Rejects a single page over MAX_PAGE_SIZE and a product over
 * MAX_PAGE_PRODUCT. A connection whose size is not known while validating (no `first`, or a
 * variable without a default) is estimated at ASSUMED_PAGE_SIZE; plain object fields cost 1.
 */
export const makePageSizeLimit = (variableValues?: Readonly<Record<string, unknown>> | null): ValidationRule => (context: ValidationContext): ASTVisitor => {
  const stack: number[] = [1];
  const variables = new Map<string, unknown>();
  return {
    OperationDefinition: {
      enter(node) {
        for (const definition of node.variableDefinitions ?? []) {
          const name = definition.variable.name.value;
          if (variableValues && name in variableValues) variables.set(name, variableValues[name]);
          else if (definition.defaultValue) variables.set(name, valueFromASTUntyped(definition.defaultValue));
        }
      },
    },
    Field: {
      enter(node) {
        const fieldDef = context.getFieldDef();
        const hasPaging = fieldDef?.args.some((a) => a.name === "first" || a.name === "last") ?? false;
        let size = 1;
        if (hasPaging) {
          size = ASSUMED_PAGE_SIZE;
          for (const argument of node.arguments ?? []) {
            if (argument.name.value !== "first" && argument.name.value !== "last") continue;
            const value = argument.value.kind === Kind.VARIABLE ? variables.get(argument.value.name.value) : valueFromASTUntyped(argument.value);
            if (typeof value === "number") size = value;
          }
          if (size > MAX_PAGE_SIZE) {
            context.reportError(new GraphQLError(`A page may hold at most ${MAX_PAGE_SIZE} rows (${node.name.value} asks for ${size}).`, { nodes: [node] }));
          }
        }
        const product = stack[stack.length - 1] * Math.max(size, 1);
        if (hasPaging && product > MAX_PAGE_PRODUCT && stack[stack.length - 1] <= MAX_PAGE_PRODUCT) {
          context.reportError(new GraphQLError(`This query could return more than ${MAX_PAGE_PRODUCT} rows: ask for smaller pages.`, { nodes: [node] }));
        }
        stack.push(product);
      },
      leave() {
        stack.pop();
      },
    },
  };
};

/** Static rules, run (and cached) when a document is validated. */
export const validationRules: ValidationRule[] = [
  depthLimit({
    maxDepth: MAX_DEPTH,
    maxListDepth: MAX_LIST_DEPTH,
    maxIntrospectionDepth: 20,
    maxIntrospectionListDepth: 6,
    // The standard introspection query (GraphiQL, Ruru, codegen) nests __Type.ofType 9 deep.
    maxDepthByFieldCoordinates: { "__Type.ofType": 10 },
  }),
  makePageSizeLimit(),
];

/**
 * Page sizes passed as variables are only known per request: this re-checks them then, and
 * returns the errors to report (empty when the request is within bounds).
 */
export function pageSizeErrors(schema: GraphQLSchema, document: DocumentNode, variableValues?: Readonly<Record<string, unknown>> | null): readonly GraphQLError[] {
  if (!variableValues || Object.keys(variableValues).length === 0) return [];
  return validate(schema, document, [makePageSizeLimit(variableValues)]);
}
