/**
 * Least-privilege, prefix-scoped IAM for the two Lambdas. Written out statement by statement (rather than
 * bucket.grantX helpers, which grant the whole bucket) so each permission maps to one pipeline step.
 */
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import { Prefixes } from './config';
import { Storage } from './storage';

/** Ingest: read/delete raw mail, write staging and quarantine, work the queue. Never output or state. */
export function grantIngest(fn: lambda.Function, storage: Storage, prefixes: Prefixes): void {
  const add = (s: iam.PolicyStatement) => fn.addToRolePolicy(s);
  add(objects(storage, ['s3:GetObject', 's3:DeleteObject'], [prefixes.incoming]));
  add(objects(storage, ['s3:PutObject'], [prefixes.staging, prefixes.quarantine]));
  // With ListBucket a GET of an already-archived mail answers 404 (handled: "gone") instead of 403.
  add(listing(storage, [prefixes.incoming]));
  add(
    new iam.PolicyStatement({
      actions: [
        'sqs:ReceiveMessage',
        'sqs:DeleteMessage',
        'sqs:ChangeMessageVisibility',
        'sqs:GetQueueUrl',
        'sqs:GetQueueAttributes',
      ],
      resources: [storage.queue.queueArn],
    }),
  );
  grantKey(fn, storage);
  storage.queue.encryptionMasterKey?.grantDecrypt(fn);
}

/**
 * Compact: own staging/ and state/, write output, archive mails (copy then delete the source).
 * Get on archive/ lets the archive step see that an earlier run already copied a mail (HEAD needs GetObject).
 * Put on quarantine/ because the archive action may still quarantine a mail it cannot move.
 */
export function grantCompact(fn: lambda.Function, storage: Storage, prefixes: Prefixes): void {
  const add = (s: iam.PolicyStatement) => fn.addToRolePolicy(s);
  add(
    objects(storage, ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'], [prefixes.staging, prefixes.state]),
  );
  add(objects(storage, ['s3:PutObject'], [prefixes.output, prefixes.archive, prefixes.quarantine]));
  add(objects(storage, ['s3:GetObject', 's3:DeleteObject'], [prefixes.incoming]));
  add(objects(storage, ['s3:GetObject'], [prefixes.archive]));
  add(listing(storage, [prefixes.staging, prefixes.state, prefixes.incoming, prefixes.archive]));
  grantKey(fn, storage);
}

function objects(storage: Storage, actions: string[], prefixes: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({ actions, resources: prefixes.map((p) => storage.arnForPrefix(p)) });
}

function listing(storage: Storage, prefixes: string[]): iam.PolicyStatement {
  return new iam.PolicyStatement({
    actions: ['s3:ListBucket'],
    resources: [storage.bucket.bucketArn],
    conditions: { StringLike: { 's3:prefix': prefixes.map((p) => `${p}*`) } },
  });
}

/** SSE-KMS objects and queue messages need the key; scoped to this key only. */
function grantKey(fn: lambda.Function, storage: Storage): void {
  storage.bucket.encryptionKey?.grant(fn, 'kms:Decrypt', 'kms:GenerateDataKey');
}
