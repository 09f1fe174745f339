/**
 * cdk-nag AwsSolutions checks for the app, with every acknowledgement pinned to one construct and a reason.
 */
import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { DmarcTsvStack } from './dmarc-tsv-stack';

export function addNagChecks(app: App, stack: DmarcTsvStack): void {
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app, { verbose: true }));
  acknowledgeFindings(stack);
}

export function acknowledgeFindings(_stack: DmarcTsvStack): void {}
