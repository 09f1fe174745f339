/** Shared helpers for the stack tests: synthesize variants, look up resources and IAM statements. */
import { Stack } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { CfnElement } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';
import { buildApp } from '../lib/synth';
import { DmarcTsvStack } from '../lib/dmarc-tsv-stack';

export interface Synth {
  readonly stack: DmarcTsvStack;
  readonly template: Template;
  readonly json: { Resources: Record<string, Resource>; Outputs: Record<string, { Value: unknown }> };
}
export interface Resource {
  Type: string;
  Properties: Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
  DependsOn?: string[];
  DeletionPolicy?: string;
}
export interface Statement {
  Effect: string;
  Action: string | string[];
  Resource: unknown;
  Principal?: unknown;
  Condition?: Record<string, Record<string, unknown>>;
  Sid?: string;
}

const cache = new Map<string, Synth>();

/** Synthesizes the stack (bundling skipped) with extra context; memoized per context. */
export function synth(context: Record<string, unknown> = {}): Synth {
  const key = JSON.stringify(context);
  const hit = cache.get(key);
  if (hit) return hit;
  const { stack } = buildApp(context, false);
  const template = Template.fromStack(stack);
  const result = { stack, template, json: template.toJSON() as Synth['json'] };
  cache.set(key, result);
  return result;
}

export function logicalId(construct: IConstruct): string {
  return Stack.of(construct).getLogicalId(construct.node.defaultChild as CfnElement);
}

export function resourcesOfType(s: Synth, type: string): [string, Resource][] {
  return Object.entries(s.json.Resources).filter(([, r]) => r.Type === type);
}

export function actions(st: Statement): string[] {
  return (Array.isArray(st.Action) ? st.Action : [st.Action]).slice().sort();
}

export function resourcesOf(st: Statement): unknown[] {
  return Array.isArray(st.Resource) ? st.Resource : [st.Resource];
}

/** All statements of the identity policies attached to a role. */
export function roleStatements(s: Synth, roleLogicalId: string): Statement[] {
  return resourcesOfType(s, 'AWS::IAM::Policy')
    .filter(([, p]) => (p.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === roleLogicalId))
    .flatMap(([, p]) => p.Properties.PolicyDocument.Statement as Statement[]);
}

/**
 * Renders a resource expression to a readable string: `{"Fn::Join": ["", [{"Fn::GetAtt": ["Bucket", "Arn"]},
 * "/incoming/*"]]}` -> `Bucket.Arn/incoming/*`. Makes prefix assertions readable.
 */
export function render(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const v = value as Record<string, unknown>;
    if ('Fn::Join' in v) {
      const [sep, parts] = v['Fn::Join'] as [string, unknown[]];
      return parts.map(render).join(sep);
    }
    if ('Fn::GetAtt' in v) return (v['Fn::GetAtt'] as string[]).join('.');
    if ('Ref' in v) return `Ref(${String(v.Ref)})`;
  }
  return JSON.stringify(value);
}

/** For each action, the rendered resources granted to it. */
export function grantsByAction(statements: Statement[]): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const st of statements) {
    if (st.Effect !== 'Allow') continue;
    for (const a of actions(st)) {
      out[a] = [...(out[a] ?? []), ...resourcesOf(st).map(render)].sort();
    }
  }
  return out;
}
