#!/usr/bin/env node
/** CDK entry point (cdk.json at the repository root runs it with infra's tsx). */
import { spawnSync } from 'node:child_process';
import { App } from 'aws-cdk-lib';
import { DmarcTsvStack, STACK_NAME } from '../lib/dmarc-tsv-stack';
import { addNagChecks } from '../lib/nag';

const app = new App();
// `-c skipBundling=true`: synthesize without building the Rust Lambdas (no cargo-lambda/zig needed).
// The CLI refuses user context keys starting with `aws:`, so the flag is translated here. Never deploy so.
const skip = app.node.tryGetContext('skipBundling');
if (skip === true || skip === 'true') {
  app.node.setContext('aws:cdk:bundling-stacks', []);
} else if (spawnSync('cargo-lambda', ['--version']).status !== 0) {
  // cargo-lambda-cdk then falls back to Docker; say how to proceed when neither is there.
  process.stderr.write(
    'dmarc-tsv: cargo-lambda not found on PATH: the Lambdas will be built with Docker if available.\n' +
      '  Install cargo-lambda (doc/deploy.md), or add -c skipBundling=true to synthesize without building them.\n',
  );
}

const stack = new DmarcTsvStack(app, STACK_NAME, {
  description: 'dmarc-tsv: DMARC aggregate reports from SES to gzipped TSV for Athena',
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
addNagChecks(app, stack);
