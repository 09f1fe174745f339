/**
 * In-process synthesis of the stack for tests and scripts: no cdk CLI, no credentials, no Rust build
 * (cargo-lambda bundling skipped: the RustFunctions synthesize, their assets are not built).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { App } from 'aws-cdk-lib';
import { DmarcTsvStack, STACK_NAME } from './dmarc-tsv-stack';
import { addNagChecks } from './nag';

export const OFFLINE_CONTEXT: Record<string, unknown> = { 'aws:cdk:bundling-stacks': [] };

/** The feature flags and defaults of cdk.json, so in-process synthesis matches `cdk synth`. */
export function cdkJsonContext(): Record<string, unknown> {
  const file = path.resolve(__dirname, '..', '..', 'cdk.json');
  const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as { context?: Record<string, unknown> };
  return parsed.context ?? {};
}

export interface Synthesized {
  readonly app: App;
  readonly stack: DmarcTsvStack;
}

/** Builds the app like bin/app.ts does (including cdk-nag) with extra context; call `app.synth()` to run checks. */
export function buildApp(context: Record<string, unknown> = {}, withNag = true): Synthesized {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmarc-tsv-cdk-'));
  const app = new App({ outdir, context: { ...cdkJsonContext(), ...OFFLINE_CONTEXT, ...context } });
  const stack = new DmarcTsvStack(app, STACK_NAME, {
    env: { account: '123456789012', region: 'us-east-1' },
  });
  if (withNag) addNagChecks(app, stack);
  return { app, stack };
}

/** The synthesized CloudFormation template of the stack. */
export function synthTemplate(context: Record<string, unknown> = {}): Record<string, unknown> {
  const { app } = buildApp(context, false);
  const assembly = app.synth();
  const template = assembly.getStackByName(STACK_NAME).template as Record<string, unknown>;
  fs.rmSync(assembly.directory, { recursive: true, force: true });
  return template;
}
