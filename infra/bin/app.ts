#!/usr/bin/env node
/** CDK entry point (cdk.json at the repository root runs `npx tsx infra/bin/app.ts`). */
import { App } from 'aws-cdk-lib';
import { addNagChecks } from '../lib/nag';
import { DmarcTsvStack, STACK_NAME } from '../lib/dmarc-tsv-stack';

const app = new App();
const stack = new DmarcTsvStack(app, STACK_NAME, {
  description: 'dmarc-tsv: DMARC aggregate reports from SES to gzipped TSV for Athena',
  env: { account: process.env.CDK_DEFAULT_ACCOUNT, region: process.env.CDK_DEFAULT_REGION },
});
addNagChecks(app, stack);
