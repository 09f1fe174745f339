//! AWS adapters: S3 object store, SQS queue, Step Functions client.
