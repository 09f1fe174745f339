/**
 * The data bucket (one bucket, one prefix per pipeline area), its access-log bucket, and the mail queue
 * fed by S3 event notifications on the incoming prefix.
 */
import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { DmarcTsvConfig } from './config';

export interface StorageProps {
  readonly config: DmarcTsvConfig;
  readonly key?: kms.IKey;
  readonly messagingKey?: kms.IKey;
}

export class Storage extends Construct {
  readonly bucket: s3.Bucket;
  readonly accessLogsBucket: s3.Bucket;
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;
  readonly visibilityTimeoutSeconds: number;

  constructor(scope: Construct, id: string, props: StorageProps) {
    super(scope, id);
    const { config, key, messagingKey } = props;
    this.accessLogsBucket = new s3.Bucket(this, 'AccessLogs', {
      // S3 server access log delivery only supports SSE-S3 on the target bucket.
      encryption: s3.BucketEncryption.S3_MANAGED,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
      lifecycleRules: [{ id: 'expire-access-logs', expiration: Duration.days(config.accessLogsExpireDays) }],
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.bucket = new s3.Bucket(this, 'Data', {
      encryption: key ? s3.BucketEncryption.KMS : s3.BucketEncryption.S3_MANAGED,
      encryptionKey: key,
      bucketKeyEnabled: key !== undefined,
      blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
      enforceSSL: true,
      objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
      // Off by default: the pipeline rewrites state/ and staging/ objects often and deletes them after use;
      // versions would keep every intermediate copy. Output files are deterministic and re-creatable.
      versioned: config.versioning,
      serverAccessLogsBucket: this.accessLogsBucket,
      serverAccessLogsPrefix: 'data-bucket/',
      lifecycleRules: lifecycleRules(config),
      removalPolicy: RemovalPolicy.RETAIN,
    });

    this.visibilityTimeoutSeconds = config.sqsProcessingTimeSeconds;
    const queueEncryption = messagingKey
      ? { encryption: sqs.QueueEncryption.KMS, encryptionMasterKey: messagingKey }
      : { encryption: sqs.QueueEncryption.SQS_MANAGED };
    this.deadLetterQueue = new sqs.Queue(this, 'DeadLetterQueue', {
      ...queueEncryption,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    this.queue = new sqs.Queue(this, 'Queue', {
      ...queueEncryption,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
      visibilityTimeout: Duration.seconds(this.visibilityTimeoutSeconds),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: config.dlqMaxReceiveCount },
    });
    this.bucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.SqsDestination(this.queue), {
      prefix: config.prefixes.incoming,
    });
  }

  /** `arn:...:bucket/<prefix>*`, for prefix-scoped grants. */
  arnForPrefix(prefix: string): string {
    return this.bucket.arnForObjects(`${prefix}*`);
  }
}

function lifecycleRules(config: DmarcTsvConfig): s3.LifecycleRule[] {
  const { prefixes } = config;
  const rules: s3.LifecycleRule[] = [
    { id: 'abort-incomplete-uploads', abortIncompleteMultipartUploadAfter: Duration.days(7) },
    {
      id: 'archive-to-glacier-ir',
      prefix: prefixes.archive,
      transitions: [
        {
          storageClass: s3.StorageClass.GLACIER_INSTANT_RETRIEVAL,
          transitionAfter: Duration.days(config.archiveTransitionDays),
        },
      ],
      expiration: config.archiveExpireDays > 0 ? Duration.days(config.archiveExpireDays) : undefined,
    },
    {
      id: 'quarantine-retention',
      prefix: prefixes.quarantine,
      expiration: Duration.days(config.quarantineExpireDays),
    },
    {
      id: 'athena-results-expiry',
      prefix: prefixes.athenaResults,
      expiration: Duration.days(config.athenaResultsExpireDays),
    },
  ];
  if (config.versioning) {
    rules.push({ id: 'noncurrent-versions', noncurrentVersionExpiration: Duration.days(30) });
  }
  return rules;
}
