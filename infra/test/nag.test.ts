/** cdk-nag AwsSolutions: zero unacknowledged findings in every supported configuration. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { buildApp } from '../lib/synth';

const VARIANTS: Record<string, Record<string, unknown>> = {
  defaults: {},
  'new rule set, activated, alarm e-mail': {
    recipients: 'dmarc@example.com',
    activateRuleSet: true,
    alarmEmail: 'ops@example.com',
  },
  'existing rule set': { recipients: 'example.com', existingRuleSetName: 'main' },
  's3 encryption, versioning, no schedule, csv': {
    encryption: 's3',
    versioning: true,
    schedule: 'none',
    format: 'csv',
  },
};

/** Synthesizes with the nag plugin; returns the AwsSolutions violations (synth throws when there are any). */
function nagViolations(
  context: Record<string, unknown>,
  tamper?: (stack: import('aws-cdk-lib').Stack) => void,
) {
  const { app, stack } = buildApp(context, true);
  tamper?.(stack);
  try {
    const assembly = app.synth();
    fs.rmSync(assembly.directory, { recursive: true, force: true });
    return [];
  } catch (e) {
    const match = /found in: (\S+validation-report\.json)/.exec(String(e));
    if (!match) throw e;
    const report = JSON.parse(fs.readFileSync(match[1], 'utf8')) as {
      pluginReports: {
        pluginName: string;
        violations: { ruleName: string; violatingConstructs: { constructPath: string }[] }[];
      }[];
    };
    return report.pluginReports
      .filter((p) => p.pluginName === 'AwsSolutions')
      .flatMap((p) =>
        p.violations.flatMap((v) => v.violatingConstructs.map((c) => `${v.ruleName} ${c.constructPath}`)),
      );
  }
}

describe('cdk-nag AwsSolutions', () => {
  for (const [name, context] of Object.entries(VARIANTS)) {
    it(`has no unacknowledged findings: ${name}`, () => {
      assert.deepEqual(nagViolations(context), []);
    });
  }

  it('is really checking (an unprotected queue is reported)', () => {
    const found = nagViolations({}, (stack) => new sqs.Queue(stack, 'Unprotected'));
    assert.ok(
      found.some((f) => f.startsWith('AwsSolutions-SQS4 DmarcTsv/Unprotected')),
      found.join('\n'),
    );
  });
});
