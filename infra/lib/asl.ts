/**
 * Pulls the state machine definition (ASL) out of a synthesized template: CDK writes it as an `Fn::Join`
 * of JSON text and tokens. Tokens are resolved to fixed placeholders so the result is plain, runnable ASL:
 * Lambda ARNs become `arn:aws:lambda:us-east-1:123456789012:function:<binary name>` (the binary name comes
 * from the function's `dmarc-tsv:function` tag), which the local runner maps to local handlers.
 */
import { FUNCTION_TAG } from './names';

export const PLACEHOLDER_REGION = 'us-east-1';
export const PLACEHOLDER_ACCOUNT = '123456789012';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface Resource {
  Type: string;
  Properties?: Record<string, Json>;
}
export interface CfnTemplate {
  Resources: Record<string, Resource>;
}

export class AslExtractionError extends Error {}

export function lambdaArn(functionName: string): string {
  return `arn:aws:lambda:${PLACEHOLDER_REGION}:${PLACEHOLDER_ACCOUNT}:function:${functionName}`;
}

/** Logical ids of the state machines in the template, in template order. */
export function stateMachineIds(template: CfnTemplate): string[] {
  return Object.entries(template.Resources ?? {})
    .filter(([, r]) => r.Type === 'AWS::StepFunctions::StateMachine')
    .map(([id]) => id);
}

/** The ASL of the state machine `logicalId` (default: the only one in the template). */
export function extractAsl(template: CfnTemplate, logicalId?: string): Record<string, unknown> {
  const ids = stateMachineIds(template);
  const id = logicalId ?? (ids.length === 1 ? ids[0] : undefined);
  if (id === undefined) {
    throw new AslExtractionError(
      `expected exactly one state machine, found ${ids.length}: ${ids.join(', ')}; name one`,
    );
  }
  const resource = template.Resources[id];
  if (resource?.Type !== 'AWS::StepFunctions::StateMachine') {
    throw new AslExtractionError(`${id} is not a state machine in this template`);
  }
  const props = resource.Properties ?? {};
  const raw = props.DefinitionString ?? props.Definition;
  if (raw === undefined) throw new AslExtractionError(`${id} has no DefinitionString`);
  // DefinitionSubstitutions fill `${name}` in the definition (and take precedence in an Fn::Sub).
  const substitutions: Record<string, string> = {};
  const subs = props.DefinitionSubstitutions;
  if (subs && typeof subs === 'object' && !Array.isArray(subs)) {
    for (const [key, value] of Object.entries(subs)) substitutions[key] = resolveToString(template, value);
  }
  const isLiteralObject =
    typeof raw === 'object' &&
    raw !== null &&
    !Array.isArray(raw) &&
    !('Fn::Join' in raw) &&
    !('Fn::Sub' in raw);
  let text = isLiteralObject ? JSON.stringify(raw) : resolveToString(template, raw, substitutions);
  for (const [key, value] of Object.entries(substitutions)) text = text.split('${' + key + '}').join(value);
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new AslExtractionError(
      `definition of ${id} is not JSON after resolving tokens: ${(e as Error).message}`,
    );
  }
}

/** Resolves the CloudFormation intrinsics CDK emits in definitions to placeholder strings. */
export function resolveToString(
  template: CfnTemplate,
  value: Json,
  variables: Record<string, string> = {},
): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (value === null || Array.isArray(value))
    throw new AslExtractionError(`cannot resolve ${JSON.stringify(value)}`);
  if ('Fn::Join' in value) {
    const [sep, parts] = value['Fn::Join'] as [string, Json[]];
    return parts.map((p) => resolveToString(template, p, variables)).join(sep);
  }
  if ('Ref' in value) return resolveRef(template, String(value.Ref));
  if ('Fn::GetAtt' in value) {
    const att = value['Fn::GetAtt'];
    const [id, attribute] = Array.isArray(att) ? att.map(String) : String(att).split('.', 2);
    return resolveGetAtt(template, id, attribute);
  }
  if ('Fn::Sub' in value && typeof value['Fn::Sub'] === 'string') {
    return value['Fn::Sub'].replace(/\$\{([^}!]+)\}/g, (_, name: string) => {
      if (name in variables) return variables[name];
      const [id, attribute] = name.split('.', 2);
      return attribute === undefined ? resolveRef(template, id) : resolveGetAtt(template, id, attribute);
    });
  }
  throw new AslExtractionError(`unsupported intrinsic in definition: ${JSON.stringify(value)}`);
}

function resolveRef(template: CfnTemplate, name: string): string {
  switch (name) {
    case 'AWS::Region':
      return PLACEHOLDER_REGION;
    case 'AWS::AccountId':
      return PLACEHOLDER_ACCOUNT;
    case 'AWS::Partition':
      return 'aws';
    case 'AWS::URLSuffix':
      return 'amazonaws.com';
    default:
      // Ref of a Lambda function is its name.
      return template.Resources[name]?.Type === 'AWS::Lambda::Function' ? functionName(template, name) : name;
  }
}

function resolveGetAtt(template: CfnTemplate, id: string, attribute: string): string {
  const resource = template.Resources[id];
  if (resource === undefined) throw new AslExtractionError(`Fn::GetAtt of unknown resource ${id}`);
  if (resource.Type === 'AWS::Lambda::Function' && attribute === 'Arn')
    return lambdaArn(functionName(template, id));
  const service = resource.Type.split('::')[1]?.toLowerCase() ?? 'unknown';
  return `arn:aws:${service}:${PLACEHOLDER_REGION}:${PLACEHOLDER_ACCOUNT}:${id}/${attribute}`;
}

/** The `dmarc-tsv:function` tag (binary name) of a function, else its logical id. */
function functionName(template: CfnTemplate, id: string): string {
  const tags = template.Resources[id]?.Properties?.Tags;
  if (Array.isArray(tags)) {
    for (const tag of tags) {
      if (
        tag &&
        typeof tag === 'object' &&
        !Array.isArray(tag) &&
        tag.Key === FUNCTION_TAG &&
        typeof tag.Value === 'string'
      ) {
        return tag.Value;
      }
    }
  }
  return id;
}

/**
 * Task state name -> Lambda function name (the last ARN segment), over all nested Map/Parallel states.
 * aws-local-stepfunctions keys `taskResourceLocalHandlers` by state name; this maps them to functions.
 */
export function taskFunctions(asl: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  const visit = (states: unknown): void => {
    if (!states || typeof states !== 'object') return;
    for (const [name, state] of Object.entries(states as Record<string, Record<string, unknown>>)) {
      if (state.Type === 'Task' && typeof state.Resource === 'string') {
        const match = /^arn:[^:]+:lambda:[^:]*:[^:]*:function:([^:]+)/.exec(state.Resource);
        if (match) out[name] = match[1];
      }
      const nested = (state.ItemProcessor ?? state.Iterator) as { States?: unknown } | undefined;
      if (nested) visit(nested.States);
      if (Array.isArray(state.Branches))
        for (const b of state.Branches) visit((b as { States?: unknown }).States);
    }
  };
  visit(asl.States);
  return out;
}
