/**
 * The two Rust Lambdas, built from the workspace by cargo-lambda-cdk (arm64, provided.al2023).
 * Their binary names double as the stable names the end-to-end test maps Task ARNs to (see FUNCTION_TAG).
 */
import * as path from 'node:path';
import { Duration, RemovalPolicy, Tags } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { RustFunction } from 'cargo-lambda-cdk';
import { Construct } from 'constructs';
import { FunctionSizing } from './config';
import { FUNCTION_TAG } from './names';

export { COMPACT_BINARY, FUNCTION_TAG, INGEST_BINARY } from './names';

/** Repository root: infra/lib/.. /.. (the Cargo workspace). */
export const REPO_ROOT = path.resolve(__dirname, '..', '..');

export interface PipelineFunctionProps {
  /** Crate directory below the repository root, e.g. `lambdas/ingest`. */
  readonly crateDir: string;
  readonly binaryName: string;
  readonly description: string;
  readonly sizing: FunctionSizing;
  readonly environment: Record<string, string>;
  readonly logRetentionDays: number;
  readonly encryptionKey?: kms.IKey;
}

export class PipelineFunction extends Construct {
  readonly function: lambda.Function;
  readonly logGroup: logs.LogGroup;
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: PipelineFunctionProps) {
    super(scope, id);
    this.logGroup = new logs.LogGroup(this, 'Logs', {
      retention: props.logRetentionDays as logs.RetentionDays,
      encryptionKey: props.encryptionKey,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    // Own role instead of AWSLambdaBasicExecutionRole: log writes limited to this function's log group.
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `${props.binaryName} Lambda execution role`,
    });
    this.logGroup.grantWrite(this.role);
    const common: lambda.FunctionOptions = {
      role: this.role,
      description: props.description,
      memorySize: props.sizing.memoryMb,
      timeout: Duration.seconds(props.sizing.timeoutSeconds),
      environment: props.environment,
      environmentEncryption: props.encryptionKey,
      logGroup: this.logGroup,
      loggingFormat: lambda.LoggingFormat.JSON,
      applicationLogLevelV2: lambda.ApplicationLogLevel.INFO,
      systemLogLevelV2: lambda.SystemLogLevel.WARN,
      tracing: lambda.Tracing.ACTIVE,
      architecture: lambda.Architecture.ARM_64,
    };
    // Built by cargo-lambda during synth unless bundling is skipped (context skipBundling, tests).
    this.function = new RustFunction(this, 'Function', {
      ...common,
      manifestPath: path.join(REPO_ROOT, props.crateDir, 'Cargo.toml'),
      binaryName: props.binaryName,
      runtime: 'provided.al2023',
      bundling: { architecture: lambda.Architecture.ARM_64 },
    });
    Tags.of(this.function).add(FUNCTION_TAG, props.binaryName);
  }
}
