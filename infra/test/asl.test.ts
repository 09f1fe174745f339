/** extract-asl: token resolution on hand-made templates, and the CLI on a synthesized one. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { AslExtractionError, CfnTemplate, extractAsl, lambdaArn, taskFunctions } from '../lib/asl';
import { synthTemplate } from '../lib/synth';

const fn = (tag?: string): CfnTemplate['Resources'][string] => ({
  Type: 'AWS::Lambda::Function',
  Properties: tag ? { Tags: [{ Key: 'dmarc-tsv:function', Value: tag }] } : {},
});
const machine = (
  definition: unknown,
  extra: Record<string, unknown> = {},
): CfnTemplate['Resources'][string] =>
  ({
    Type: 'AWS::StepFunctions::StateMachine',
    Properties: { DefinitionString: definition, ...extra },
  }) as CfnTemplate['Resources'][string];

describe('extractAsl', () => {
  it('resolves Fn::Join, GetAtt of tagged functions, pseudo parameters and Refs', () => {
    const template: CfnTemplate = {
      Resources: {
        A: fn('dmarc-tsv-ingest'),
        B: fn(),
        M: machine({
          'Fn::Join': [
            '',
            [
              '{"StartAt":"x","States":{"x":{"Type":"Task","Resource":"',
              { 'Fn::GetAtt': ['A', 'Arn'] },
              '","Next":"y"},"y":{"Type":"Task","Resource":"',
              { 'Fn::GetAtt': 'B.Arn' },
              '","Comment":"',
              { Ref: 'AWS::Region' },
              '/',
              { Ref: 'AWS::AccountId' },
              '/',
              { Ref: 'AWS::Partition' },
              '/',
              { Ref: 'B' },
              '","End":true}}}',
            ],
          ],
        }),
      },
    };
    const asl = extractAsl(template) as { States: Record<string, Record<string, string>> };
    assert.equal(asl.States.x.Resource, lambdaArn('dmarc-tsv-ingest'));
    assert.equal(asl.States.y.Resource, lambdaArn('B'), 'untagged function: logical id');
    assert.equal(asl.States.y.Comment, 'us-east-1/123456789012/aws/B');
    assert.deepEqual(taskFunctions(asl), { x: 'dmarc-tsv-ingest', y: 'B' });
  });

  it('applies DefinitionSubstitutions and Fn::Sub', () => {
    const template: CfnTemplate = {
      Resources: {
        F: fn('dmarc-tsv-compact'),
        M: machine(
          {
            'Fn::Sub':
              '{"StartAt":"t","States":{"t":{"Type":"Task","Resource":"${fnArn}","Comment":"${AWS::Region}","End":true}}}',
          },
          { DefinitionSubstitutions: { fnArn: { 'Fn::GetAtt': ['F', 'Arn'] } } },
        ),
      },
    };
    const asl = extractAsl(template) as { States: Record<string, Record<string, string>> };
    assert.equal(asl.States.t.Resource, lambdaArn('dmarc-tsv-compact'));
    assert.equal(asl.States.t.Comment, 'us-east-1');
  });

  it('refuses ambiguous or broken input with a clear error', () => {
    assert.throws(() => extractAsl({ Resources: {} }), /found 0/);
    const two: CfnTemplate = { Resources: { M1: machine('{}'), M2: machine('{}') } };
    assert.throws(() => extractAsl(two), AslExtractionError);
    assert.deepEqual(extractAsl(two, 'M2'), {});
    assert.throws(() => extractAsl({ Resources: { M: machine('{not json') } }), /not JSON/);
    assert.throws(
      () => extractAsl({ Resources: { M: machine({ 'Fn::Join': ['', [{ 'Fn::ImportValue': 'x' }]] }) } }),
      /unsupported intrinsic/,
    );
    assert.throws(
      () =>
        extractAsl({ Resources: { M: machine({ 'Fn::Join': ['', [{ 'Fn::GetAtt': ['Nope', 'Arn'] }]] }) } }),
      /unknown resource Nope/,
    );
  });
});

describe('scripts/extract-asl.ts', () => {
  it('prints the ASL and the task map of a template file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'extract-asl-'));
    try {
      const file = path.join(dir, 'template.json');
      fs.writeFileSync(file, JSON.stringify(synthTemplate()));
      const tsx = path.join(__dirname, '..', 'node_modules', '.bin', 'tsx');
      const script = path.join(__dirname, '..', 'scripts', 'extract-asl.ts');
      const asl = spawnSync(tsx, [script, file], { encoding: 'utf8' });
      assert.equal(asl.status, 0, asl.stderr);
      assert.equal(JSON.parse(asl.stdout).StartAt, 'Init');
      const tasks = spawnSync(tsx, [script, '--tasks', file], { encoding: 'utf8' });
      assert.equal(JSON.parse(tasks.stdout).IngestBatch, 'dmarc-tsv-ingest');
      const bad = spawnSync(tsx, [script, '--bogus'], { encoding: 'utf8' });
      assert.equal(bad.status, 2);
      assert.match(bad.stderr, /usage/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
