/**
 * Running and watching the pipeline: the EventBridge Scheduler schedule that starts executions, the
 * alarm topic, and alarms on the dead-letter queue, failed runs, Lambda errors and quarantined mail.
 */
import { Duration, TimeZone } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cwActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as targets from 'aws-cdk-lib/aws-scheduler-targets';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subscriptions from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { DmarcTsvConfig } from './config';

/** EMF namespace and metric written by the Lambdas (lambdas/common/support.rs), dimension `Function`. */
export const METRIC_NAMESPACE = 'DmarcTsv';
export const QUARANTINED_METRIC = 'Quarantined';

export interface OperationsProps {
  readonly config: DmarcTsvConfig;
  readonly stateMachine: sfn.IStateMachine;
  readonly functions: Record<string, lambda.IFunction>;
  readonly deadLetterQueue: sqs.IQueue;
  readonly messagingKey?: kms.IKey;
}

export class Operations extends Construct {
  readonly topic: sns.Topic;
  readonly schedule?: scheduler.Schedule;
  readonly scheduleDeadLetterQueue?: sqs.Queue;
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, id: string, props: OperationsProps) {
    super(scope, id);
    const { config } = props;
    this.topic = new sns.Topic(this, 'AlarmTopic', {
      displayName: 'dmarc-tsv alarms',
      masterKey: props.messagingKey,
      enforceSSL: true,
    });
    if (config.alarmEmail) this.topic.addSubscription(new subscriptions.EmailSubscription(config.alarmEmail));
    props.messagingKey?.grantEncryptDecrypt(new iam.ServicePrincipal('cloudwatch.amazonaws.com'));

    this.alarm('DeadLetterQueueNotEmpty', {
      metric: props.deadLetterQueue.metricApproximateNumberOfMessagesVisible({
        period: Duration.minutes(5),
        statistic: 'Maximum',
      }),
      description: 'Queue messages the ingest Lambda could not handle reached the dead-letter queue.',
    });
    this.alarm('ExecutionsFailed', {
      metric: sumOf(
        props.stateMachine.metricFailed({ period: Duration.minutes(5) }),
        props.stateMachine.metricTimedOut({ period: Duration.minutes(5) }),
        props.stateMachine.metricAborted({ period: Duration.minutes(5) }),
        'failed + timed out + aborted executions',
      ),
      description: 'A pipeline run failed, timed out or was aborted.',
    });
    for (const [name, fn] of Object.entries(props.functions)) {
      this.alarm(`${name}Errors`, {
        metric: fn.metricErrors({ period: Duration.minutes(5), statistic: 'Sum' }),
        description: `The ${name} Lambda returned errors (retried ones included).`,
      });
    }
    this.alarm('MailQuarantined', {
      metric: new cloudwatch.MathExpression({
        expression: 'FILL(ingest, 0) + FILL(compact, 0)',
        usingMetrics: {
          ingest: quarantined('ingest'),
          compact: quarantined('compact'),
        },
        label: 'quarantined mails',
        period: Duration.hours(1),
      }),
      description: 'Mails without a usable DMARC report were moved to the quarantine prefix.',
    });

    if (config.schedule !== 'none') {
      this.scheduleDeadLetterQueue = new sqs.Queue(this, 'ScheduleDeadLetterQueue', {
        encryption: sqs.QueueEncryption.SQS_MANAGED,
        enforceSSL: true,
        retentionPeriod: Duration.days(14),
      });
      this.schedule = new scheduler.Schedule(this, 'Schedule', {
        description: 'Starts a dmarc-tsv pipeline run',
        schedule: scheduler.ScheduleExpression.expression(
          config.schedule,
          TimeZone.of(config.scheduleTimezone),
        ),
        target: new targets.StepFunctionsStartExecution(props.stateMachine, {
          input: scheduler.ScheduleTargetInput.fromObject({}),
          deadLetterQueue: this.scheduleDeadLetterQueue,
          retryAttempts: config.scheduleRetries,
          maxEventAge: Duration.hours(1),
        }),
      });
      this.alarm('ScheduleDeadLetters', {
        metric: this.scheduleDeadLetterQueue.metricApproximateNumberOfMessagesVisible({
          period: Duration.minutes(5),
          statistic: 'Maximum',
        }),
        description: 'EventBridge Scheduler could not start a pipeline run.',
      });
    }
  }

  private alarm(id: string, opts: { metric: cloudwatch.IMetric; description: string }): void {
    const alarm = new cloudwatch.Alarm(this, id, {
      metric: opts.metric,
      alarmDescription: opts.description,
      threshold: 0,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    alarm.addAlarmAction(new cwActions.SnsAction(this.topic));
    this.alarms.push(alarm);
  }
}

function quarantined(fn: string): cloudwatch.Metric {
  return new cloudwatch.Metric({
    namespace: METRIC_NAMESPACE,
    metricName: QUARANTINED_METRIC,
    dimensionsMap: { Function: fn },
    statistic: 'Sum',
    period: Duration.hours(1),
  });
}

function sumOf(
  a: cloudwatch.IMetric,
  b: cloudwatch.IMetric,
  c: cloudwatch.IMetric,
  label: string,
): cloudwatch.IMetric {
  return new cloudwatch.MathExpression({
    expression: 'FILL(a, 0) + FILL(b, 0) + FILL(c, 0)',
    usingMetrics: { a, b, c },
    label,
    period: Duration.minutes(5),
  });
}
