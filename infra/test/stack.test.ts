/**
 * Assertions on the synthesized DmarcTsv template: every resource and property the design asks for,
 * per-function IAM (prefix-scoped, no "*" where a prefix will do), and the context knobs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Match } from 'aws-cdk-lib/assertions';
import { App } from 'aws-cdk-lib';
import { DmarcTsvStack } from '../lib/dmarc-tsv-stack';
import { CfnTemplate, extractAsl } from '../lib/asl';
import { DEFAULTS } from '../lib/config';
import { grantsByAction, logicalId, render, resourcesOfType, roleStatements, synth } from './helpers';

const FULL = {
  recipients: 'dmarc@example.com,reports.example.org',
  activateRuleSet: true,
  alarmEmail: 'ops@example.com',
};

describe('data bucket', () => {
  const s = synth();
  const bucketId = logicalId(s.stack.storage.bucket);
  const bucket = s.json.Resources[bucketId];

  it('is KMS encrypted with the stack key, private, logged, unversioned by default and retained', () => {
    const rule = bucket.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0];
    assert.equal(rule.ServerSideEncryptionByDefault.SSEAlgorithm, 'aws:kms');
    assert.deepEqual(rule.ServerSideEncryptionByDefault.KMSMasterKeyID, {
      'Fn::GetAtt': [logicalId(s.stack.key!), 'Arn'],
    });
    assert.equal(rule.BucketKeyEnabled, true);
    assert.deepEqual(bucket.Properties.PublicAccessBlockConfiguration, {
      BlockPublicAcls: true,
      BlockPublicPolicy: true,
      IgnorePublicAcls: true,
      RestrictPublicBuckets: true,
    });
    assert.equal(bucket.Properties.VersioningConfiguration, undefined);
    assert.deepEqual(bucket.Properties.LoggingConfiguration.DestinationBucketName, {
      Ref: logicalId(s.stack.storage.accessLogsBucket),
    });
    assert.equal(bucket.DeletionPolicy, 'Retain');
  });

  it('denies requests without TLS', () => {
    s.template.hasResourceProperties('AWS::S3::BucketPolicy', {
      Bucket: { Ref: bucketId },
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
        ]),
      },
    });
  });

  it('has lifecycle rules per prefix: archive to Glacier IR then expiry, quarantine and results expiry, MPU abort', () => {
    const rules = bucket.Properties.LifecycleConfiguration.Rules as Record<string, any>[];
    const byId = Object.fromEntries(rules.map((r) => [r.Id, r]));
    assert.deepEqual(byId['archive-to-glacier-ir'].Transitions, [
      { StorageClass: 'GLACIER_IR', TransitionInDays: 30 },
    ]);
    assert.equal(byId['archive-to-glacier-ir'].Prefix, 'archive/');
    assert.equal(byId['archive-to-glacier-ir'].ExpirationInDays, DEFAULTS.archiveExpireDays);
    assert.equal(byId['quarantine-retention'].Prefix, 'quarantine/');
    assert.equal(byId['quarantine-retention'].ExpirationInDays, DEFAULTS.quarantineExpireDays);
    assert.equal(byId['athena-results-expiry'].Prefix, 'athena-results/');
    assert.equal(byId['abort-incomplete-uploads'].AbortIncompleteMultipartUpload.DaysAfterInitiation, 7);
    for (const r of rules) {
      assert.ok(
        !['staging/', 'state/', 'dmarc/', 'incoming/'].includes(r.Prefix),
        `no lifecycle on ${r.Prefix}`,
      );
    }
  });

  it('follows context: S3-managed encryption, versioning, archive kept forever, custom prefixes', () => {
    const v = synth({ encryption: 's3', versioning: true, archiveExpireDays: 0, archivePrefix: 'old/mail/' });
    const b = v.json.Resources[logicalId(v.stack.storage.bucket)];
    const rule = b.Properties.BucketEncryption.ServerSideEncryptionConfiguration[0];
    assert.equal(rule.ServerSideEncryptionByDefault.SSEAlgorithm, 'AES256');
    assert.deepEqual(b.Properties.VersioningConfiguration, { Status: 'Enabled' });
    const archive = (b.Properties.LifecycleConfiguration.Rules as Record<string, any>[]).find(
      (r) => r.Id === 'archive-to-glacier-ir',
    )!;
    assert.equal(archive.Prefix, 'old/mail/');
    assert.equal(archive.ExpirationInDays, undefined);
    assert.equal(resourcesOfType(v, 'AWS::KMS::Key').length, 0);
    assert.equal(v.stack.ingest.function.node.defaultChild !== undefined, true);
  });
});

describe('queue', () => {
  const s = synth();
  const queue = s.json.Resources[logicalId(s.stack.storage.queue)];
  const dlq = s.json.Resources[logicalId(s.stack.storage.deadLetterQueue)];

  it('is KMS encrypted, keeps messages 14 days and redrives to the DLQ after 5 receives', () => {
    assert.deepEqual(queue.Properties.KmsMasterKeyId, {
      'Fn::GetAtt': [logicalId(s.stack.messagingKey!), 'Arn'],
    });
    assert.equal(queue.Properties.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(dlq.Properties.MessageRetentionPeriod, 14 * 24 * 3600);
    assert.equal(queue.Properties.RedrivePolicy.maxReceiveCount, 5);
    assert.deepEqual(queue.Properties.RedrivePolicy.deadLetterTargetArn, {
      'Fn::GetAtt': [logicalId(s.stack.storage.deadLetterQueue), 'Arn'],
    });
    assert.equal(synth({ dlqMaxReceiveCount: 9 }).stack.storage.queue !== undefined, true);
    const nine = synth({ dlqMaxReceiveCount: 9 });
    assert.equal(
      nine.json.Resources[logicalId(nine.stack.storage.queue)].Properties.RedrivePolicy.maxReceiveCount,
      9,
    );
  });

  it('has a visibility timeout of at least 6 x the ingest timeout, equal to DMARC_SQSPROCESSINGTIME', () => {
    const ingest = s.json.Resources[logicalId(s.stack.ingest.function)];
    const visibility = queue.Properties.VisibilityTimeout as number;
    assert.ok(visibility >= 6 * (ingest.Properties.Timeout as number));
    assert.equal(ingest.Properties.Environment.Variables.DMARC_SQSPROCESSINGTIME, String(visibility));
  });

  it('denies non-TLS access on both queues', () => {
    for (const q of [s.stack.storage.queue, s.stack.storage.deadLetterQueue]) {
      s.template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: logicalId(q) }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });

  it('receives S3 object-created events for the incoming prefix only', () => {
    s.template.hasResourceProperties('Custom::S3BucketNotifications', {
      NotificationConfiguration: {
        QueueConfigurations: [
          {
            Events: ['s3:ObjectCreated:*'],
            Filter: { Key: { FilterRules: [{ Name: 'prefix', Value: 'incoming/' }] } },
            QueueArn: { 'Fn::GetAtt': [logicalId(s.stack.storage.queue), 'Arn'] },
          },
        ],
      },
    });
  });
});

describe('lambdas', () => {
  const s = synth({ ingestMemoryMb: 512, compactTimeoutSeconds: 600 });

  it('run arm64 provided.al2023 Rust binaries with per-function memory and timeout, JSON logs, tracing', () => {
    for (const [f, memory, timeout, binary] of [
      [s.stack.ingest, 512, DEFAULTS.ingestTimeoutSeconds, 'dmarc-tsv-ingest'],
      [s.stack.compact, DEFAULTS.compactMemoryMb, 600, 'dmarc-tsv-compact'],
    ] as const) {
      const p = s.json.Resources[logicalId(f.function)].Properties;
      assert.deepEqual(p.Architectures, ['arm64']);
      assert.equal(p.Runtime, 'provided.al2023');
      assert.equal(p.Handler, 'bootstrap');
      assert.equal(p.MemorySize, memory);
      assert.equal(p.Timeout, timeout);
      assert.equal(p.LoggingConfig.LogFormat, 'JSON');
      assert.deepEqual(p.LoggingConfig.LogGroup, { Ref: logicalId(f.logGroup) });
      assert.deepEqual(p.TracingConfig, { Mode: 'Active' });
      assert.deepEqual(p.Tags, [{ Key: 'dmarc-tsv:function', Value: binary }]);
      const logs = s.json.Resources[logicalId(f.logGroup)].Properties;
      assert.equal(logs.RetentionInDays, DEFAULTS.logRetentionDays);
    }
  });

  it('get the DMARC_* settings the Rust settings loader reads', () => {
    const env = s.json.Resources[logicalId(s.stack.ingest.function)].Properties.Environment.Variables;
    assert.deepEqual(env.DMARC_BUCKET, { Ref: logicalId(s.stack.storage.bucket) });
    assert.deepEqual(env.DMARC_SQS, { Ref: logicalId(s.stack.storage.queue) });
    assert.equal(env.DMARC_BUCKETREGION, 'us-east-1');
    assert.equal(env.DMARC_SQSREGION, 'us-east-1');
    assert.equal(env.DMARC_MOVE, 'archive/');
    assert.equal(env.DMARC_ARCHIVEFORMAT, 'mbox', 'bundles: no COPY per mail');
    assert.equal(env.DMARC_MAXRECORDS, '32');
    assert.equal(env.DMARC_INCOMINGPREFIX, 'incoming/');
    assert.equal(env.DMARC_STAGINGPREFIX, 'staging/');
    assert.equal(env.DMARC_STATEPREFIX, 'state/');
    assert.equal(env.DMARC_OUTPUTPREFIX, 'dmarc/');
    assert.equal(env.DMARC_QUARANTINEPREFIX, 'quarantine/');
    assert.equal(env.DMARC_FORMAT, 'tsv');
    assert.equal(env.DMARC_LOG_FORMAT, 'json');
  });

  it('do not use the AWS managed basic execution role', () => {
    for (const [, role] of resourcesOfType(s, 'AWS::IAM::Role')) {
      const trusted = JSON.stringify(role.Properties.AssumeRolePolicyDocument);
      if (!trusted.includes('lambda.amazonaws.com')) continue;
      const managed = JSON.stringify(role.Properties.ManagedPolicyArns ?? []);
      if (
        role === s.json.Resources[logicalId(s.stack.ingest.role)] ||
        role === s.json.Resources[logicalId(s.stack.compact.role)]
      ) {
        assert.equal(managed, '[]');
      }
    }
  });
});

describe('IAM per function (least privilege, prefix-scoped)', () => {
  const s = synth();
  const bucket = `${logicalId(s.stack.storage.bucket)}.Arn`;
  const queue = `${logicalId(s.stack.storage.queue)}.Arn`;
  const key = `${logicalId(s.stack.key!)}.Arn`;
  const ingest = roleStatements(s, logicalId(s.stack.ingest.role));
  const compact = roleStatements(s, logicalId(s.stack.compact.role));
  const s3Grants = (statements: typeof ingest) =>
    Object.fromEntries(Object.entries(grantsByAction(statements)).filter(([a]) => a.startsWith('s3:')));

  it('ingest: read/delete incoming, write staging and quarantine, nothing on output or state', () => {
    assert.deepEqual(s3Grants(ingest), {
      's3:GetObject': [`${bucket}/incoming/*`],
      's3:DeleteObject': [`${bucket}/incoming/*`],
      's3:PutObject': [`${bucket}/quarantine/*`, `${bucket}/staging/*`],
      's3:ListBucket': [bucket],
    });
  });

  it('ingest: works the queue (receive, delete, change visibility, url, attributes) and nothing else in SQS', () => {
    const sqs = Object.entries(grantsByAction(ingest)).filter(([a]) => a.startsWith('sqs:'));
    assert.deepEqual(sqs.map(([a]) => a).sort(), [
      'sqs:ChangeMessageVisibility',
      'sqs:DeleteMessage',
      'sqs:GetQueueAttributes',
      'sqs:GetQueueUrl',
      'sqs:ReceiveMessage',
    ]);
    for (const [, resources] of sqs) assert.deepEqual(resources, [queue]);
  });

  it('compact: owns staging and state, writes output/archive/quarantine, reads+deletes incoming, never the queue', () => {
    assert.deepEqual(s3Grants(compact), {
      's3:GetObject': [
        `${bucket}/archive/*`,
        `${bucket}/incoming/*`,
        `${bucket}/staging/*`,
        `${bucket}/state/*`,
      ],
      's3:PutObject': [
        `${bucket}/archive/*`,
        `${bucket}/dmarc/*`,
        `${bucket}/quarantine/*`,
        `${bucket}/staging/*`,
        `${bucket}/state/*`,
      ],
      's3:DeleteObject': [`${bucket}/incoming/*`, `${bucket}/staging/*`, `${bucket}/state/*`],
      's3:ListBucket': [bucket],
    });
    assert.equal(Object.keys(grantsByAction(compact)).filter((a) => a.startsWith('sqs:')).length, 0);
  });

  it('ListBucket is limited by s3:prefix conditions', () => {
    const listing = (statements: typeof ingest) => statements.find((st) => st.Action === 's3:ListBucket')!;
    assert.deepEqual(listing(ingest).Condition, { StringLike: { 's3:prefix': ['incoming/*'] } });
    assert.deepEqual(listing(compact).Condition, {
      StringLike: { 's3:prefix': ['staging/*', 'state/*', 'incoming/*', 'archive/*'] },
    });
  });

  it('uses "*" only for X-Ray (no resource-level permissions), KMS only on the stack keys', () => {
    for (const statements of [ingest, compact]) {
      const grants = grantsByAction(statements);
      for (const [action, resources] of Object.entries(grants)) {
        if (action.startsWith('xray:')) continue;
        assert.ok(!resources.includes('*'), `${action} has Resource "*"`);
        assert.ok(!resources.some((r) => r.endsWith(`${bucket}/*`)), `${action} on the whole bucket`);
      }
      assert.ok(grants['kms:Decrypt'].includes(key));
    }
  });

  it('the state machine may invoke exactly the two functions', () => {
    const machine = roleStatements(s, logicalId(s.stack.stateMachine.role as never));
    const invoke = grantsByAction(machine)['lambda:InvokeFunction'];
    const fns = [s.stack.ingest.function, s.stack.compact.function].map((f) => `${logicalId(f)}.Arn`);
    assert.deepEqual(invoke, [...fns, ...fns.map((f) => `${f}:*`)].sort());
  });
});

describe('SES receiving', () => {
  it('is absent without recipients', () => {
    const s = synth();
    assert.equal(resourcesOfType(s, 'AWS::SES::ReceiptRule').length, 0);
    assert.equal(resourcesOfType(s, 'AWS::SES::ReceiptRuleSet').length, 0);
  });

  it("creates a rule set and a rule writing the recipients' mail to incoming/", () => {
    const s = synth(FULL);
    s.template.hasResourceProperties('AWS::SES::ReceiptRuleSet', { RuleSetName: 'dmarc-tsv' });
    s.template.hasResourceProperties('AWS::SES::ReceiptRule', {
      Rule: {
        Name: 'dmarc-tsv-reports',
        Enabled: true,
        ScanEnabled: true,
        Recipients: ['dmarc@example.com', 'reports.example.org'],
        Actions: [
          {
            S3Action: {
              BucketName: { Ref: logicalId(s.stack.storage.bucket) },
              ObjectKeyPrefix: 'incoming/',
            },
          },
        ],
      },
    });
  });

  it('lets only SES of this account and this rule put objects, and only under incoming/', () => {
    const s = synth(FULL);
    const [[policyId, policy]] = resourcesOfType(s, 'AWS::S3::BucketPolicy').filter(
      ([, p]) => p.Properties.Bucket.Ref === logicalId(s.stack.storage.bucket),
    );
    const ses = (policy.Properties.PolicyDocument.Statement as any[]).filter((st) =>
      JSON.stringify(st.Principal ?? '').includes('ses.amazonaws.com'),
    );
    assert.equal(ses.length, 1);
    assert.equal(ses[0].Action, 's3:PutObject');
    assert.equal(render(ses[0].Resource), `${logicalId(s.stack.storage.bucket)}.Arn/incoming/*`);
    assert.equal(ses[0].Condition.StringEquals['aws:SourceAccount'], '123456789012');
    assert.match(
      render(ses[0].Condition.ArnLike['aws:SourceArn']),
      /:ses:us-east-1:123456789012:receipt-rule-set\/dmarc-tsv:receipt-rule\/dmarc-tsv-reports$/,
    );
    const [[, rule]] = resourcesOfType(s, 'AWS::SES::ReceiptRule');
    assert.ok(
      rule.DependsOn?.includes(policyId),
      'rule waits for the bucket policy (SES test-writes on create)',
    );
    const keyStatements = s.json.Resources[logicalId(s.stack.key!)].Properties.KeyPolicy.Statement as any[];
    const sesKey = keyStatements.find((st) => JSON.stringify(st.Principal).includes('ses.amazonaws.com'));
    assert.deepEqual(sesKey.Condition, { StringEquals: { 'kms:ViaService': 's3.us-east-1.amazonaws.com' } });
    assert.deepEqual([sesKey.Action].flat().sort(), ['kms:Encrypt', 'kms:GenerateDataKey*']);
  });

  it('activates the new rule set only when asked', () => {
    const calls = (s: ReturnType<typeof synth>) =>
      resourcesOfType(s, 'Custom::AWS').map(([, r]) => JSON.parse(r.Properties.Create as string));
    assert.deepEqual(calls(synth(FULL)), [
      {
        service: 'SES',
        action: 'setActiveReceiptRuleSet',
        parameters: { RuleSetName: 'dmarc-tsv' },
        physicalResourceId: { id: 'active-receipt-rule-set-dmarc-tsv' },
      },
    ]);
    assert.deepEqual(calls(synth({ recipients: 'example.com' })), []);
  });

  it('adds the rule to an existing rule set by name, without creating or activating one', () => {
    const s = synth({ recipients: 'dmarc@example.com', existingRuleSetName: 'main-rules' });
    assert.equal(resourcesOfType(s, 'AWS::SES::ReceiptRuleSet').length, 0);
    assert.equal(resourcesOfType(s, 'Custom::AWS').length, 0);
    s.template.hasResourceProperties('AWS::SES::ReceiptRule', { RuleSetName: 'main-rules' });
    assert.ok(JSON.stringify(s.json).includes('receipt-rule-set/main-rules:receipt-rule/dmarc-tsv-reports'));
  });
});

describe('state machine resource', () => {
  const s = synth();
  it('is a Standard machine logging ALL without execution data, traced, with a timeout', () => {
    const p = s.json.Resources[logicalId(s.stack.stateMachine)].Properties;
    assert.equal(p.StateMachineType, 'STANDARD');
    assert.equal(p.LoggingConfiguration.Level, 'ALL');
    assert.equal(p.LoggingConfiguration.IncludeExecutionData, false);
    assert.deepEqual(p.TracingConfiguration, { Enabled: true });
    const asl = extractAsl(s.json as unknown as CfnTemplate);
    assert.equal(asl.TimeoutSeconds, DEFAULTS.stateMachineTimeoutMinutes * 60);
  });
});

describe('schedule', () => {
  it('starts executions on the configured cron with retries and a DLQ', () => {
    const s = synth({ schedule: 'cron(30 4 * * ? *)' });
    s.template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'cron(30 4 * * ? *)',
      ScheduleExpressionTimezone: 'UTC',
      Target: {
        Arn: { Ref: logicalId(s.stack.stateMachine) },
        RetryPolicy: { MaximumRetryAttempts: 3 },
        DeadLetterConfig: {
          Arn: { 'Fn::GetAtt': [logicalId(s.stack.operations.scheduleDeadLetterQueue!), 'Arn'] },
        },
      },
    });
    assert.equal(
      resourcesOfType(synth(), 'AWS::Scheduler::Schedule')[0][1].Properties.ScheduleExpression,
      'cron(0 3 * * ? *)',
    );
  });

  it('can be disabled', () => {
    assert.equal(resourcesOfType(synth({ schedule: 'none' }), 'AWS::Scheduler::Schedule').length, 0);
  });
});

describe('Athena', () => {
  const s = synth();
  const [[, table]] = resourcesOfType(s, 'AWS::Glue::Table');

  it('defines a TSV table over dmarc/ with date partition projection on dt', () => {
    const input = table.Properties.TableInput;
    assert.equal(input.TableType, 'EXTERNAL_TABLE');
    assert.deepEqual(input.PartitionKeys, [
      { Name: 'dt', Type: 'string', Comment: 'report begin date (UTC), yyyy-MM-dd' },
    ]);
    assert.equal(input.Parameters['projection.enabled'], 'true');
    assert.equal(input.Parameters['projection.dt.type'], 'date');
    assert.equal(input.Parameters['projection.dt.format'], 'yyyy-MM-dd');
    assert.equal(input.Parameters['projection.dt.range'], '2012-01-01,NOW');
    assert.equal(
      render(input.Parameters['storage.location.template']),
      `s3://Ref(${logicalId(s.stack.storage.bucket)})/dmarc/dt=\${dt}/`,
    );
    const sd = input.StorageDescriptor;
    assert.equal(render(sd.Location), `s3://Ref(${logicalId(s.stack.storage.bucket)})/dmarc/`);
    assert.equal(sd.InputFormat, 'org.apache.hadoop.mapred.TextInputFormat');
    assert.equal(sd.SerdeInfo.SerializationLibrary, 'org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe');
    assert.equal(sd.SerdeInfo.Parameters['field.delim'], '\t');
  });

  it("passes archiveFormat=mail through to both functions (the seed's one object per mail)", () => {
    const mail = synth({ archiveFormat: 'mail' });
    for (const f of [mail.stack.ingest.function, mail.stack.compact.function]) {
      const env = mail.json.Resources[logicalId(f)].Properties.Environment.Variables;
      assert.equal(env.DMARC_ARCHIVEFORMAT, 'mail');
    }
    assert.throws(() => synth({ archiveFormat: 'zip' }), /archiveFormat/);
  });

  it('uses OpenCSVSerde and skips the header for format=csv', () => {
    const csv = synth({ format: 'csv' });
    const input = resourcesOfType(csv, 'AWS::Glue::Table')[0][1].Properties.TableInput;
    assert.equal(
      input.StorageDescriptor.SerdeInfo.SerializationLibrary,
      'org.apache.hadoop.hive.serde2.OpenCSVSerde',
    );
    assert.equal(input.Parameters['skip.header.line.count'], '1');
  });

  it('has a workgroup with enforced, encrypted results under athena-results/ and a scan cutoff', () => {
    s.template.hasResourceProperties('AWS::Athena::WorkGroup', {
      Name: 'dmarc-tsv',
      WorkGroupConfiguration: {
        EnforceWorkGroupConfiguration: true,
        BytesScannedCutoffPerQuery: DEFAULTS.bytesScannedCutoffMb * 1024 * 1024,
        ResultConfiguration: {
          OutputLocation: {
            'Fn::Join': ['', ['s3://', { Ref: logicalId(s.stack.storage.bucket) }, '/athena-results/']],
          },
          EncryptionConfiguration: { EncryptionOption: 'SSE_KMS' },
        },
      },
    });
  });

  it("saves the queries of doc/athena-queries.sql, including the seed's disposition summary", () => {
    const queries = resourcesOfType(s, 'AWS::Athena::NamedQuery').map(([, q]) => q.Properties);
    assert.deepEqual(queries.map((q) => q.Name).sort(), [
      'DispositionSummary',
      'PassRatesBySource',
      'PerReporterTotals',
      'TopFailingSources',
    ]);
    const disposition = queries.find((q) => q.Name === 'DispositionSummary')!;
    assert.equal(
      disposition.QueryString.replace(/\s+/g, ' '),
      'SELECT disposition, sum(count) AS number FROM "dmarc"."dmarc_reports" WHERE disposition != \'\' GROUP BY disposition ORDER BY number DESC;',
    );
    for (const q of queries) assert.equal(q.WorkGroup, 'dmarc-tsv');
    const renamed = synth({ databaseName: 'mail', tableName: 'aggregate' });
    const sqls = resourcesOfType(renamed, 'AWS::Athena::NamedQuery').map(
      ([, q]) => q.Properties.QueryString as string,
    );
    assert.ok(sqls.every((q) => q.includes('"mail"."aggregate"') && !q.includes('dmarc_reports')));
  });
});

describe('operations', () => {
  it('has a KMS topic with the optional e-mail subscription', () => {
    const s = synth(FULL);
    s.template.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: { 'Fn::GetAtt': [logicalId(s.stack.messagingKey!), 'Arn'] },
    });
    s.template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
    assert.equal(resourcesOfType(synth(), 'AWS::SNS::Subscription').length, 0);
  });

  it('alarms on DLQ depth, failed runs, Lambda errors of each function, quarantined mail, schedule DLQ', () => {
    const s = synth();
    const alarms = resourcesOfType(s, 'AWS::CloudWatch::Alarm').map(([, a]) => a.Properties);
    assert.equal(alarms.length, 6);
    const topic = { Ref: logicalId(s.stack.operations.topic) };
    for (const a of alarms) {
      assert.deepEqual(a.AlarmActions, [topic]);
      assert.equal(a.Threshold, 0);
      assert.equal(a.ComparisonOperator, 'GreaterThanThreshold');
    }
    const text = JSON.stringify(alarms);
    assert.ok(text.includes('ApproximateNumberOfMessagesVisible'));
    assert.ok(text.includes('ExecutionsFailed'));
    assert.equal((text.match(/"MetricName":"Errors"/g) ?? []).length, 2);
    const quarantine = alarms.find((a) => JSON.stringify(a).includes('Quarantined'))!;
    const metrics = (quarantine.Metrics as any[]).filter((m) => m.MetricStat).map((m) => m.MetricStat.Metric);
    assert.deepEqual(metrics.map((m) => [m.Namespace, m.MetricName, m.Dimensions[0].Value]).sort(), [
      ['DmarcTsv', 'Quarantined', 'compact'],
      ['DmarcTsv', 'Quarantined', 'ingest'],
    ]);
  });
});

describe('outputs', () => {
  it('exports what `dmarc-tsv start` and operators need', () => {
    const outputs = synth(FULL).json.Outputs;
    for (const key of [
      'BucketName',
      'QueueUrl',
      'DeadLetterQueueUrl',
      'StateMachineArn',
      'WorkGroup',
      'Database',
      'Table',
      'StartRunCommand',
      'IngestFunctionName',
      'CompactFunctionName',
    ]) {
      assert.ok(outputs[key], `output ${key}`);
    }
    assert.match(render(outputs.StartRunCommand.Value), /^dmarc-tsv start --stack DmarcTsv/);
    assert.deepEqual(outputs.StateMachineArn.Value, { Ref: logicalId(synth(FULL).stack.stateMachine) });
  });
});

describe('context validation', () => {
  const attempt = (context: Record<string, unknown>) => () => {
    const app = new App({ context: { 'aws:cdk:bundling-stacks': [], ...context } });
    new DmarcTsvStack(app, 'DmarcTsv');
  };
  it('rejects bad values with a message naming the key', () => {
    assert.throws(attempt({ stagingPrefix: 'staging' }), /stagingPrefix/);
    assert.throws(attempt({ stagingPrefix: '/abs/' }), /stagingPrefix/);
    assert.throws(attempt({ statePrefix: 'staging/state/' }), /inside prefix staging/);
    assert.throws(attempt({ ingestWorkers: 0 }), /ingestWorkers/);
    assert.throws(attempt({ ingestWorkers: 'four' }), /ingestWorkers/);
    assert.throws(attempt({ encryption: 'none' }), /encryption/);
    assert.throws(attempt({ sqsProcessingTimeSeconds: 600 }), /6 x ingestTimeoutSeconds/);
    assert.throws(attempt({ recipients: 'not an address' }), /recipients/);
    assert.throws(attempt({ existingRuleSetName: 'x', activateRuleSet: true }), /activateRuleSet/);
    assert.throws(attempt({ archiveExpireDays: 10 }), /archiveExpireDays/);
    assert.throws(attempt({ tableName: 'Bad-Name' }), /tableName/);
    assert.throws(attempt({ schedule: 'rate(1 hour)' }), /runs could overlap/);
    assert.throws(attempt({ schedule: 'daily' }), /schedule/);
    assert.throws(attempt({ logRetentionDays: 10 }), /logRetentionDays/);
  });
  it('accepts string forms from the command line', () => {
    assert.doesNotThrow(
      attempt({ ingestWorkers: '2', versioning: 'true', recipients: 'a@example.com, example.org' }),
    );
    assert.doesNotThrow(attempt({ schedule: 'rate(12 hours)', stateMachineTimeoutMinutes: '300' }));
  });
});

describe('keys', () => {
  it("rotate, and let CloudWatch Logs use the data key only for this account's log groups", () => {
    const s = synth();
    for (const key of [s.stack.key!, s.stack.messagingKey!]) {
      assert.equal(s.json.Resources[logicalId(key)].Properties.EnableKeyRotation, true);
    }
    const statements = s.json.Resources[logicalId(s.stack.key!)].Properties.KeyPolicy.Statement as any[];
    const logs = statements.find((st) => st.Sid === 'AllowCloudWatchLogsOfThisAccount');
    assert.deepEqual(logs.Principal, { Service: 'logs.us-east-1.amazonaws.com' });
    assert.match(
      render(logs.Condition.ArnLike['kms:EncryptionContext:aws:logs:arn']),
      /:logs:us-east-1:123456789012:log-group:\*$/,
    );
    for (const id of [s.stack.ingest.logGroup, s.stack.compact.logGroup].map(logicalId)) {
      assert.deepEqual(s.json.Resources[id].Properties.KmsKeyId, {
        'Fn::GetAtt': [logicalId(s.stack.key!), 'Arn'],
      });
    }
  });
});
