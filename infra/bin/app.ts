#!/usr/bin/env node
/** CDK entry point (cdk.json at the repository root runs it with infra's tsx). */
import { App } from 'aws-cdk-lib';
import { DmarcTsvStack, STACK_NAME } from '../lib/dmarc-tsv-stack';
import { addNagChecks } from '../lib/nag';

const app = new App();
// `-c skipBundling=true`: synthesize without building the Rust Lambdas (no cargo-lambda/zig needed).
// The CLI refuses user context keys starting with `aws:`, so the flag is translated here. Never deploy so.
const skip = app.node.tryGetContext('skipBundling');
if (skip === true || skip === 'true') app.node.setContext('aws:cdk:bundling-stacks', []);

const stack = new DmarcTsvStack(app, STACK_NAME, {
  description: 'dmarc-tsv: DMARC aggregate reports from SES to gzipped TSV for Athena',
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
addNagChecks(app, stack);
