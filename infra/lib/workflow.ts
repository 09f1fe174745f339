/**
 * The Step Functions state machine that drives one pipeline run: ingest rounds, per-partition compaction,
 * archive, then a totals summary (printed by `dmarc-tsv start`).
 *
 * Constraints that shape this file:
 * - JSONPath only, inline Map only, no Variables: the end-to-end test runs the extracted definition with
 *   aws-local-stepfunctions 3.0, which ignores JSONata and lacks Distributed Map.
 * - Lambda tasks use `payloadResponseOnly` so each Task Resource is the bare function ARN, which the local
 *   runner maps to a local handler by function name.
 * - State stays small and bounded: every Task keeps only its summary numbers, every Map result is folded into
 *   `$.totals` right after the Map, and per-iteration arrays are overwritten, never appended.
 */
import { Duration } from 'aws-cdk-lib';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import * as tasks from 'aws-cdk-lib/aws-stepfunctions-tasks';
import { Construct } from 'constructs';

export interface WorkflowProps {
  readonly ingestFunction: lambda.IFunction;
  readonly compactFunction: lambda.IFunction;
  /** Parallel ingest workers per round (Map over `$.workers`). */
  readonly ingestWorkers: number;
  /** Upper bound on ingest rounds in one run, so a flooded queue cannot keep a run alive forever. */
  readonly maxIngestIterations: number;
  /** Partitions compacted in parallel. */
  readonly compactWorkers: number;
  readonly ingestTimeout: Duration;
  readonly compactTimeout: Duration;
}

/** Counters carried through the run and returned as the execution output. */
export const TOTAL_FIELDS = [
  'mails',
  'reports',
  'rows',
  'quarantined',
  'ignored',
  'files',
  'outputRows',
  'duplicates',
  'moved',
] as const;
export type TotalField = (typeof TOTAL_FIELDS)[number];

/** Errors worth retrying: the Lambdas report retryable failures as `Transient` (see design doc). */
export const RETRYABLE_ERRORS = [
  'Transient',
  'Lambda.ServiceException',
  'Lambda.AWSLambdaException',
  'Lambda.SdkClientException',
  'Lambda.TooManyRequestsException',
  'States.Timeout',
];

/** Workers per summing Pass: keeps each field's nested intrinsic functions well under the limit of 10. */
const WORKERS_PER_SUM_STATE = 8;

export class Workflow extends Construct {
  /** The start of the chain, for `DefinitionBody.fromChainable`. */
  readonly definition: sfn.IChainable;

  constructor(
    scope: Construct,
    id: string,
    private readonly props: WorkflowProps,
  ) {
    super(scope, id);
    const runFailed = new sfn.Fail(this, 'RunFailed', {
      comment: 'A step failed after its retries; the error and cause of the failing step are kept.',
      errorPath: '$.error.Error',
      causePath: '$.error.Cause',
    });
    const archive = this.archivePhase(runFailed);
    const compaction = this.compactionPhase(runFailed, archive);
    this.definition = this.ingestPhase(runFailed, compaction);
  }

  /** Init -> Map(ingest workers) -> fold counters -> loop while any worker has more and the cap allows. */
  private ingestPhase(runFailed: sfn.Fail, next: sfn.IChainable): sfn.IChainable {
    const { ingestWorkers, maxIngestIterations } = this.props;
    const init = new sfn.Pass(this, 'Init', {
      comment: 'Round counter, one Map item per ingest worker (numbered from 1), zeroed totals.',
      result: sfn.Result.fromObject({
        iteration: 0,
        // Numbered from 1: aws-local-stepfunctions 3.0 treats a path that yields 0 as "no value".
        workers: Array.from({ length: ingestWorkers }, (_, i) => i + 1),
        totals: Object.fromEntries(TOTAL_FIELDS.map((f) => [f, 0])),
      }),
    });

    const ingestBatch = this.invoke('IngestBatch', {
      fn: this.props.ingestFunction,
      timeout: this.props.ingestTimeout,
      payload: { worker: sfn.JsonPath.numberAt('$.worker') },
      // No ResultPath: the default replaces the item with the summary. (An explicit "$" is mishandled by
      // aws-local-stepfunctions 3.0, which writes a key named "$".)
      keep: ['mails', 'reports', 'rows', 'quarantined', 'ignored', 'more'],
    });
    ingestBatch.addCatch(this.failInside('IngestWorkerFailed'), { resultPath: '$.error' });
    const ingestMap = new sfn.Map(this, 'Ingest', {
      comment: 'Each worker drains up to a bounded number of SQS batches and stages their rows.',
      itemsPath: '$.workers',
      // An object per item (not the bare number) so a Catch can add `$.error` to it.
      itemSelector: { 'worker.$': '$$.Map.Item.Value' },
      maxConcurrency: ingestWorkers,
      resultPath: '$.ingest',
    });
    ingestMap.itemProcessor(ingestBatch);
    ingestMap.addCatch(runFailed, { resultPath: '$.error' });

    const fold = this.foldIngestResults();
    const nextRound = new sfn.Choice(this, 'MoreMail?', {
      comment: `Another round while a worker saw more messages, at most ${maxIngestIterations} rounds.`,
    })
      .when(
        sfn.Condition.and(
          sfn.Condition.booleanEquals('$.ingestMore', true),
          sfn.Condition.numberLessThan('$.iteration', maxIngestIterations),
        ),
        ingestMap,
      )
      .otherwise(next);
    init.next(ingestMap);
    ingestMap.next(fold.first);
    fold.last.next(nextRound);
    return init;
  }

  /**
   * Adds every worker's counters to `$.totals`, counts the round and drops `$.ingest`.
   * Intrinsic functions cannot sum an array, but the Map always yields exactly `ingestWorkers` items,
   * so the sums are written out index by index (in several states when there are many workers).
   */
  private foldIngestResults(): { first: sfn.Pass; last: sfn.Pass } {
    const summed: TotalField[] = ['mails', 'reports', 'rows', 'quarantined', 'ignored'];
    const states: sfn.Pass[] = [];
    const workerCount = this.props.ingestWorkers;
    for (let start = 0; start < workerCount; start += WORKERS_PER_SUM_STATE) {
      const end = Math.min(start + WORKERS_PER_SUM_STATE, workerCount);
      const isFirst = start === 0;
      const isLast = end === workerCount;
      const totals = totalsWith((field) =>
        summed.includes(field)
          ? sumExpression(
              `$.totals.${field}`,
              range(start, end).map((i) => `$.ingest[${i}].${field}`),
            )
          : `$.totals.${field}`,
      );
      const parameters: Record<string, unknown> = {
        'iteration.$': isFirst ? 'States.MathAdd($.iteration, 1)' : '$.iteration',
        'workers.$': '$.workers',
        'ingestMore.$': isFirst ? 'States.ArrayContains($.ingest[*].more, true)' : '$.ingestMore',
        totals,
      };
      if (!isLast) parameters['ingest.$'] = '$.ingest';
      const name =
        workerCount <= WORKERS_PER_SUM_STATE ? 'AddIngestCounts' : `AddIngestCounts${start}to${end - 1}`;
      states.push(new sfn.Pass(this, name, { parameters }));
    }
    // Link the summing states into one straight chain; the caller attaches both ends.
    states.slice(1).forEach((state, i) => states[i].next(state));
    return { first: states[0], last: states[states.length - 1] };
  }

  /** plan -> Map(partition: compact while more) -> fold per-partition counters -> re-plan while more. */
  private compactionPhase(runFailed: sfn.Fail, archive: sfn.IChainable): sfn.IChainable {
    const plan = this.invoke('PlanCompaction', {
      fn: this.props.compactFunction,
      timeout: this.props.compactTimeout,
      payload: { action: 'plan' },
      keep: ['partitions', 'more'],
      extra: { 'count.$': 'States.ArrayLength($.partitions)' },
      resultPath: '$.plan',
    });
    plan.addCatch(runFailed, { resultPath: '$.error' });

    const partitionMap = new sfn.Map(this, 'CompactPartitions', {
      comment: 'One item per partition: partitions are independent, and no two workers share one.',
      itemsPath: '$.plan.partitions',
      maxConcurrency: this.props.compactWorkers,
      itemSelector: { 'partition.$': '$$.Map.Item.Value', files: 0, rows: 0, duplicates: 0 },
      resultSelector: { 'files.$': '$[*].files', 'rows.$': '$[*].rows', 'duplicates.$': '$[*].duplicates' },
      resultPath: '$.compacted',
    });
    partitionMap.itemProcessor(this.compactOnePartition());
    partitionMap.addCatch(runFailed, { resultPath: '$.error' });

    // Sum the per-partition arrays one element per step (their length varies, up to 500 per plan).
    const startSum = new sfn.Pass(this, 'StartPartitionSum', {
      parameters: { i: 0, 'n.$': 'States.ArrayLength($.compacted.files)', files: 0, rows: 0, duplicates: 0 },
      resultPath: '$.sum',
    });
    const addOne = new sfn.Pass(this, 'AddPartitionCounts', {
      parameters: {
        'i.$': 'States.MathAdd($.sum.i, 1)',
        'n.$': '$.sum.n',
        'files.$': 'States.MathAdd($.sum.files, States.ArrayGetItem($.compacted.files, $.sum.i))',
        'rows.$': 'States.MathAdd($.sum.rows, States.ArrayGetItem($.compacted.rows, $.sum.i))',
        'duplicates.$':
          'States.MathAdd($.sum.duplicates, States.ArrayGetItem($.compacted.duplicates, $.sum.i))',
      },
      resultPath: '$.sum',
    });
    const foldCompaction = new sfn.Pass(this, 'AddCompactionCounts', {
      comment: 'Fold this plan round into the totals and drop the per-partition arrays.',
      parameters: {
        'iteration.$': '$.iteration',
        'plan.$': '$.plan',
        totals: totalsWith((field) => {
          if (field === 'files') return 'States.MathAdd($.totals.files, $.sum.files)';
          if (field === 'outputRows') return 'States.MathAdd($.totals.outputRows, $.sum.rows)';
          if (field === 'duplicates') return 'States.MathAdd($.totals.duplicates, $.sum.duplicates)';
          return `$.totals.${field}`;
        }),
      },
    });
    const morePlans = new sfn.Choice(this, 'MorePartitions?', {
      comment: 'The plan call lists at most 500 partitions; ask again while it says there are more.',
    })
      .when(sfn.Condition.booleanEquals('$.plan.more', true), plan)
      .otherwise(archive);
    const sumLoop = new sfn.Choice(this, 'MorePartitionCounts?')
      .when(sfn.Condition.numberLessThanJsonPath('$.sum.i', '$.sum.n'), addOne)
      .otherwise(foldCompaction);
    addOne.next(sumLoop);
    foldCompaction.next(morePlans);

    const anyPartition = new sfn.Choice(this, 'AnyPartition?')
      .when(sfn.Condition.numberGreaterThan('$.plan.count', 0), partitionMap)
      .otherwise(morePlans);
    partitionMap.next(startSum).next(sumLoop);
    return plan.next(anyPartition);
  }

  /** Map item: compact one partition piece by piece, summing its counters, until it reports no more. */
  private compactOnePartition(): sfn.IChainable {
    const compact = this.invoke('CompactPartition', {
      fn: this.props.compactFunction,
      timeout: this.props.compactTimeout,
      payload: { action: 'compact', partition: sfn.JsonPath.stringAt('$.partition') },
      keep: ['files', 'rows', 'duplicates', 'more'],
      resultPath: '$.last',
    });
    compact.addCatch(this.failInside('CompactPartitionFailed'), { resultPath: '$.error' });
    const add = new sfn.Pass(this, 'AddPieceCounts', {
      parameters: {
        'partition.$': '$.partition',
        'files.$': 'States.MathAdd($.files, $.last.files)',
        'rows.$': 'States.MathAdd($.rows, $.last.rows)',
        'duplicates.$': 'States.MathAdd($.duplicates, $.last.duplicates)',
        'more.$': '$.last.more',
      },
    });
    const again = new sfn.Choice(this, 'MoreInPartition?')
      .when(sfn.Condition.booleanEquals('$.more', true), compact)
      .otherwise(new sfn.Succeed(this, 'PartitionCompacted'));
    return compact.next(add).next(again);
  }

  /** archive while more -> Result (the run's totals) -> Done. */
  private archivePhase(runFailed: sfn.Fail): sfn.IChainable {
    const archive = this.invoke('Archive', {
      fn: this.props.compactFunction,
      timeout: this.props.compactTimeout,
      payload: { action: 'archive' },
      keep: ['moved', 'quarantined', 'more'],
      resultPath: '$.archive',
    });
    archive.addCatch(runFailed, { resultPath: '$.error' });
    const add = new sfn.Pass(this, 'AddArchiveCounts', {
      parameters: totalsWith((field) => {
        // Archive's `quarantined` counts ledger entries of mails ingest already counted: not added.
        if (field === 'moved') return 'States.MathAdd($.totals.moved, $.archive.moved)';
        return `$.totals.${field}`;
      }),
      resultPath: '$.totals',
    });
    const result = new sfn.Pass(this, 'Result', {
      comment: 'The execution output: run totals (`dmarc-tsv start` prints them).',
      parameters: { ...totalsWith((field) => `$.totals.${field}`), 'ingestRounds.$': '$.iteration' },
    });
    const again = new sfn.Choice(this, 'MoreToArchive?')
      .when(sfn.Condition.booleanEquals('$.archive.more', true), archive)
      .otherwise(result.next(new sfn.Succeed(this, 'Done')));
    return archive.next(add).next(again);
  }

  /** A Lambda task with the shared Retry policy whose result keeps only the named summary fields. */
  private invoke(
    id: string,
    opts: {
      fn: lambda.IFunction;
      timeout: Duration;
      payload: Record<string, unknown>;
      keep: string[];
      extra?: Record<string, string>;
      resultPath?: string;
    },
  ): tasks.LambdaInvoke {
    const task = new tasks.LambdaInvoke(this, id, {
      lambdaFunction: opts.fn,
      payload: sfn.TaskInput.fromObject(opts.payload),
      payloadResponseOnly: true,
      retryOnServiceExceptions: false,
      // A little above the function timeout: a hung invocation surfaces as States.Timeout and is retried.
      taskTimeout: sfn.Timeout.duration(opts.timeout.plus(Duration.seconds(60))),
      resultSelector: {
        ...Object.fromEntries(opts.keep.map((k) => [`${k}.$`, `$.${k}`])),
        ...(opts.extra ?? {}),
      },
      resultPath: opts.resultPath,
    });
    task.addRetry({
      errors: RETRYABLE_ERRORS,
      interval: Duration.seconds(2),
      backoffRate: 2,
      maxAttempts: 5,
      maxDelay: Duration.seconds(60),
      jitterStrategy: sfn.JitterType.FULL,
    });
    return task;
  }

  /** A Fail state inside a Map iteration (a Catch cannot leave the iteration's scope). */
  private failInside(id: string): sfn.Fail {
    return new sfn.Fail(this, id, { errorPath: '$.error.Error', causePath: '$.error.Cause' });
  }
}

/** A totals object whose fields are JSONPath/intrinsic expressions, in the fixed TOTAL_FIELDS order. */
function totalsWith(expression: (field: TotalField) => string): Record<string, string> {
  return Object.fromEntries(TOTAL_FIELDS.map((f) => [`${f}.$`, expression(f)]));
}

/** `States.MathAdd(a, States.MathAdd(b, ...))` over the base and every term. */
function sumExpression(base: string, terms: string[]): string {
  return [base, ...terms].reduceRight((acc, term) => `States.MathAdd(${term}, ${acc})`);
}

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}
