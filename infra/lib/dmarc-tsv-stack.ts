/**
 * Stack `DmarcTsv`: SES receiving -> S3 `incoming/` -> SQS -> scheduled Step Functions run of the ingest
 * and compact Lambdas -> gzipped TSV under `dmarc/` queried through Glue/Athena.
 */
import { Annotations, CfnOutput, Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { Analytics } from './athena';
import { DmarcTsvConfig, readConfig } from './config';
import { COMPACT_BINARY, INGEST_BINARY, PipelineFunction } from './functions';
import { grantCompact, grantIngest } from './grants';
import { Operations } from './operations';
import { Receiving } from './ses';
import { Storage } from './storage';
import { Workflow } from './workflow';

export const STACK_NAME = 'DmarcTsv';

export class DmarcTsvStack extends Stack {
  readonly config: DmarcTsvConfig;
  readonly storage: Storage;
  readonly ingest: PipelineFunction;
  readonly compact: PipelineFunction;
  readonly stateMachine: sfn.StateMachine;
  readonly receiving?: Receiving;
  readonly analytics: Analytics;
  readonly operations: Operations;
  /** Data bucket objects, Lambda environment and log groups. */
  readonly key?: kms.Key;
  /** Queues and the alarm topic: separate from `key` because S3 notification grants on it name the bucket. */
  readonly messagingKey?: kms.Key;

  constructor(scope: Construct, id: string, props?: StackProps) {
    super(scope, id, props);
    const config = readConfig(this.node);
    this.config = config;

    this.key =
      config.encryption === 'kms'
        ? new kms.Key(this, 'Key', {
            description: 'dmarc-tsv: data bucket, Lambda environment, log groups',
            enableKeyRotation: true,
          })
        : undefined;
    this.messagingKey =
      config.encryption === 'kms'
        ? new kms.Key(this, 'MessagingKey', {
            description: 'dmarc-tsv: mail queue, dead-letter queue, alarm topic',
            enableKeyRotation: true,
          })
        : undefined;
    if (this.key) this.allowLogsToUseKey(this.key);

    this.storage = new Storage(this, 'Storage', { config, key: this.key, messagingKey: this.messagingKey });
    if (config.recipients.length > 0) {
      this.receiving = new Receiving(this, 'Receiving', {
        config,
        bucket: this.storage.bucket,
        key: this.key,
      });
    } else {
      Annotations.of(this).addInfo(
        'No context "recipients": no SES receipt rule; put raw mails under the incoming prefix yourself.',
      );
    }
    const environment = this.lambdaEnvironment(config);
    this.ingest = new PipelineFunction(this, 'Ingest', {
      crateDir: 'lambdas/ingest',
      binaryName: INGEST_BINARY,
      description: 'dmarc-tsv ingest: drains SQS, parses mails, stages rows',
      sizing: config.ingest,
      environment,
      logRetentionDays: config.logRetentionDays,
      encryptionKey: this.key,
    });
    this.compact = new PipelineFunction(this, 'Compact', {
      crateDir: 'lambdas/compact',
      binaryName: COMPACT_BINARY,
      description: 'dmarc-tsv compact: merges staged rows into gzipped TSV, archives mails',
      sizing: config.compact,
      environment,
      logRetentionDays: config.logRetentionDays,
      encryptionKey: this.key,
    });
    grantIngest(this.ingest.function, this.storage, config.prefixes);
    grantCompact(this.compact.function, this.storage, config.prefixes);

    const workflow = new Workflow(this, 'Workflow', {
      ingestFunction: this.ingest.function,
      compactFunction: this.compact.function,
      ingestWorkers: config.ingestWorkers,
      maxIngestIterations: config.maxIngestIterations,
      compactWorkers: config.compactWorkers,
      ingestTimeout: Duration.seconds(config.ingest.timeoutSeconds),
      compactTimeout: Duration.seconds(config.compact.timeoutSeconds),
    });
    const machineLogs = new logs.LogGroup(this, 'StateMachineLogs', {
      retention: config.logRetentionDays as logs.RetentionDays,
      encryptionKey: this.key,
    });
    this.stateMachine = new sfn.StateMachine(this, 'StateMachine', {
      comment: 'dmarc-tsv run: ingest rounds, per-partition compaction, archive',
      stateMachineType: sfn.StateMachineType.STANDARD,
      queryLanguage: sfn.QueryLanguage.JSON_PATH,
      definitionBody: sfn.DefinitionBody.fromChainable(workflow.definition),
      timeout: Duration.minutes(config.stateMachineTimeoutMinutes),
      tracingEnabled: true,
      logs: { destination: machineLogs, level: sfn.LogLevel.ALL, includeExecutionData: false },
    });

    this.analytics = new Analytics(this, 'Analytics', { config, bucket: this.storage.bucket, key: this.key });
    this.operations = new Operations(this, 'Operations', {
      config,
      stateMachine: this.stateMachine,
      functions: { Ingest: this.ingest.function, Compact: this.compact.function },
      deadLetterQueue: this.storage.deadLetterQueue,
      messagingKey: this.messagingKey,
    });
    this.outputs();
  }

  /** Everything the Rust settings loader reads (`DMARC_` + upper-case flag name). */
  private lambdaEnvironment(config: DmarcTsvConfig): Record<string, string> {
    const { prefixes } = config;
    return {
      DMARC_BUCKET: this.storage.bucket.bucketName,
      DMARC_BUCKETREGION: this.region,
      // Compact never touches the queue (and has no grant on it); settings still name it so one loader fits both.
      DMARC_SQS: this.storage.queue.queueUrl,
      DMARC_SQSREGION: this.region,
      DMARC_SQSPROCESSINGTIME: String(this.storage.visibilityTimeoutSeconds),
      DMARC_POLLMESSAGES: String(config.pollMessages),
      DMARC_MAXRECORDS: String(config.maxRecords),
      DMARC_COMPACTROWS: String(config.compactRows),
      DMARC_FORMAT: config.format,
      DMARC_MOVE: prefixes.archive,
      DMARC_ARCHIVEFORMAT: config.archiveFormat,
      DMARC_INCOMINGPREFIX: prefixes.incoming,
      DMARC_STAGINGPREFIX: prefixes.staging,
      DMARC_STATEPREFIX: prefixes.state,
      DMARC_OUTPUTPREFIX: prefixes.output,
      DMARC_QUARANTINEPREFIX: prefixes.quarantine,
      DMARC_LOG_FORMAT: 'json',
    };
  }

  /** CloudWatch Logs must be allowed to use the key before a log group can be encrypted with it. */
  private allowLogsToUseKey(key: kms.Key): void {
    key.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowCloudWatchLogsOfThisAccount',
        principals: [new iam.ServicePrincipal(`logs.${this.region}.amazonaws.com`)],
        actions: ['kms:Encrypt*', 'kms:Decrypt*', 'kms:ReEncrypt*', 'kms:GenerateDataKey*', 'kms:Describe*'],
        resources: ['*'],
        // Only for log groups of this account and region (the encryption context CloudWatch Logs sets).
        conditions: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': `arn:${this.partition}:logs:${this.region}:${this.account}:log-group:*`,
          },
        },
      }),
    );
  }

  private outputs(): void {
    new CfnOutput(this, 'BucketName', { value: this.storage.bucket.bucketName });
    new CfnOutput(this, 'QueueUrl', { value: this.storage.queue.queueUrl });
    new CfnOutput(this, 'DeadLetterQueueUrl', { value: this.storage.deadLetterQueue.queueUrl });
    new CfnOutput(this, 'StateMachineArn', { value: this.stateMachine.stateMachineArn });
    new CfnOutput(this, 'WorkGroup', { value: this.config.workGroupName });
    new CfnOutput(this, 'Database', { value: this.config.databaseName });
    new CfnOutput(this, 'Table', { value: this.config.tableName });
    new CfnOutput(this, 'AlarmTopicArn', { value: this.operations.topic.topicArn });
    if (this.receiving) {
      new CfnOutput(this, 'ReceiptRuleSet', { value: this.receiving.ruleSetName });
    }
    new CfnOutput(this, 'IngestFunctionName', { value: this.ingest.function.functionName });
    new CfnOutput(this, 'CompactFunctionName', { value: this.compact.function.functionName });
    new CfnOutput(this, 'StartRunCommand', {
      value: `dmarc-tsv start --stack ${this.stackName}   # or: aws stepfunctions start-execution --state-machine-arn ${this.stateMachine.stateMachineArn}`,
    });
  }
}
