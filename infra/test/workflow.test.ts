/**
 * The state machine as the e2e test and AWS will see it: extracted from the synthesized template, validated
 * with asl-validator, and executed with aws-local-stepfunctions against in-memory Lambda stand-ins.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import validator = require('asl-validator');
import { CfnTemplate, extractAsl, lambdaArn, taskFunctions } from '../lib/asl';
import { synthTemplate } from '../lib/synth';
import { Handler, runLocally } from './local-runner';

type Asl = Record<string, unknown>;
const aslFor = (context: Record<string, unknown> = {}): Asl =>
  extractAsl(synthTemplate(context) as unknown as CfnTemplate);
const defaultAsl = aslFor();

/** Every state of the definition, nested Map states included, by name. */
function allStates(asl: Asl): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  const visit = (states: Record<string, Record<string, unknown>>) => {
    for (const [name, state] of Object.entries(states)) {
      out[name] = state;
      const nested = state.ItemProcessor as { States: Record<string, Record<string, unknown>> } | undefined;
      if (nested) visit(nested.States);
    }
  };
  visit(asl.States as Record<string, Record<string, unknown>>);
  return out;
}

/** A fake pipeline: `mailRounds` ingest rounds with mail, partitions planned in pages, pieces per partition. */
function fakePipeline(opts: {
  mailRounds: number;
  workers: number;
  planPages: string[][];
  piecesPerPartition: number;
}) {
  const calls = { ingest: 0, plan: 0, compact: 0, archive: 0, inputs: [] as unknown[] };
  const ingest: Handler = (input) => {
    calls.ingest++;
    calls.inputs.push(input);
    const round = Math.ceil(calls.ingest / opts.workers);
    return {
      mails: 2,
      reports: 3,
      rows: 7,
      quarantined: 1,
      ignored: 1,
      more: round < opts.mailRounds,
      noise: 'x'.repeat(100),
    };
  };
  const piecesDone: Record<string, number> = {};
  const compact: Handler = (input) => {
    calls.inputs.push(input);
    switch (input.action) {
      case 'plan': {
        const page = opts.planPages[calls.plan] ?? [];
        calls.plan++;
        return { partitions: page, more: calls.plan < opts.planPages.length };
      }
      case 'compact': {
        calls.compact++;
        const p = String(input.partition);
        piecesDone[p] = (piecesDone[p] ?? 0) + 1;
        return {
          partition: p,
          files: 1,
          rows: 100,
          duplicates: 3,
          more: piecesDone[p] < opts.piecesPerPartition,
        };
      }
      case 'archive':
        calls.archive++;
        return { moved: 5, quarantined: 1, more: calls.archive < 2 };
      default:
        throw new Error(`unexpected compact input ${JSON.stringify(input)}`);
    }
  };
  return { calls, piecesDone, handlers: { 'dmarc-tsv-ingest': ingest, 'dmarc-tsv-compact': compact } };
}

describe('state machine definition', () => {
  it('passes asl-validator', () => {
    const result = validator(defaultAsl);
    assert.deepEqual(result.errors, []);
    assert.equal(result.isValid, true);
  });

  it('maps every Lambda Task to a stable function ARN', () => {
    assert.deepEqual(taskFunctions(defaultAsl), {
      IngestBatch: 'dmarc-tsv-ingest',
      PlanCompaction: 'dmarc-tsv-compact',
      CompactPartition: 'dmarc-tsv-compact',
      Archive: 'dmarc-tsv-compact',
    });
    const states = allStates(defaultAsl);
    assert.equal(states.IngestBatch.Resource, lambdaArn('dmarc-tsv-ingest'));
    assert.equal(states.Archive.Resource, lambdaArn('dmarc-tsv-compact'));
  });

  it('uses JSONPath, inline Maps and bare Lambda ARNs only (what the local runner supports)', () => {
    const text = JSON.stringify(defaultAsl);
    assert.ok(!text.includes('JSONata'), 'no JSONata');
    assert.ok(!text.includes('arn:aws:states:::'), 'no service integration ARNs');
    for (const [name, state] of Object.entries(allStates(defaultAsl))) {
      assert.notEqual(state.QueryLanguage, 'JSONata', name);
      assert.equal(state.Assign, undefined, `${name} uses Variables`);
      if (state.Type === 'Map') {
        const processor = state.ItemProcessor as { ProcessorConfig: { Mode: string } };
        assert.equal(processor.ProcessorConfig.Mode, 'INLINE', name);
      }
    }
  });

  it('retries transient Lambda failures with backoff and jitter and catches everything into a Fail state', () => {
    for (const [name, state] of Object.entries(allStates(defaultAsl))) {
      if (state.Type !== 'Task') continue;
      const [retry] = state.Retry as Record<string, unknown>[];
      for (const error of [
        'Transient',
        'Lambda.ServiceException',
        'Lambda.TooManyRequestsException',
        'States.Timeout',
      ]) {
        assert.ok((retry.ErrorEquals as string[]).includes(error), `${name} retries ${error}`);
      }
      assert.equal(retry.JitterStrategy, 'FULL', name);
      assert.ok((retry.BackoffRate as number) > 1, name);
      assert.ok((retry.MaxAttempts as number) >= 3, name);
      const [katch] = state.Catch as Record<string, unknown>[];
      assert.deepEqual(katch.ErrorEquals, ['States.ALL'], name);
      assert.equal(katch.ResultPath, '$.error', name);
      assert.equal(allStates(defaultAsl)[katch.Next as string].Type, 'Fail', name);
      assert.ok(state.ResultSelector, `${name} keeps only a summary`);
    }
  });

  it('fans ingest out over the configured workers with the right payload', () => {
    const asl = aslFor({ ingestWorkers: 3, compactWorkers: 7 });
    const states = allStates(asl);
    assert.deepEqual((states.Init.Result as { workers: number[] }).workers, [1, 2, 3]);
    assert.equal(states.Ingest.MaxConcurrency, 3);
    assert.equal(states.CompactPartitions.MaxConcurrency, 7);
    assert.deepEqual(states.IngestBatch.Parameters, { 'worker.$': '$.worker' });
    assert.deepEqual(states.PlanCompaction.Parameters, { action: 'plan' });
    assert.deepEqual(states.CompactPartition.Parameters, { action: 'compact', 'partition.$': '$.partition' });
    assert.deepEqual(states.Archive.Parameters, { action: 'archive' });
  });
});

describe('state machine run (aws-local-stepfunctions)', () => {
  it('loops ingest while workers report more, compacts every planned partition piece by piece, sums totals', async () => {
    const fake = fakePipeline({
      mailRounds: 3,
      workers: 4,
      planPages: [['2024-01-01', '2024-01-02'], ['2024-01-03']],
      piecesPerPartition: 2,
    });
    const result = await runLocally(defaultAsl, fake.handlers);
    assert.equal(fake.calls.ingest, 12);
    assert.equal(fake.calls.plan, 2);
    assert.deepEqual(fake.piecesDone, { '2024-01-01': 2, '2024-01-02': 2, '2024-01-03': 2 });
    assert.equal(fake.calls.archive, 2);
    assert.deepEqual(result, {
      mails: 24,
      reports: 36,
      rows: 84,
      quarantined: 12,
      ignored: 12,
      files: 6,
      outputRows: 600,
      duplicates: 18,
      moved: 10,
      ingestRounds: 3,
    });
    const workers = fake.calls.inputs.filter((i) => (i as { worker?: number }).worker !== undefined);
    assert.deepEqual(
      workers
        .slice(0, 4)
        .map((i) => (i as { worker: number }).worker)
        .sort(),
      [1, 2, 3, 4],
    );
  });

  it('stops ingesting after maxIngestIterations rounds even if the queue never empties', async () => {
    const asl = aslFor({ maxIngestIterations: 3, ingestWorkers: 2 });
    const fake = fakePipeline({ mailRounds: 1000, workers: 2, planPages: [[]], piecesPerPartition: 1 });
    const result = (await runLocally(asl, fake.handlers)) as Record<string, number>;
    assert.equal(fake.calls.ingest, 6);
    assert.equal(result.ingestRounds, 3);
    assert.equal(fake.calls.compact, 0, 'an empty plan skips the partition Map');
    assert.equal(result.files, 0);
  });

  it('sums any number of workers and partitions (multi-state ingest fold, partition loop)', async () => {
    const asl = aslFor({ ingestWorkers: 11 });
    const partitions = Array.from({ length: 25 }, (_, i) => `2024-02-${String(i + 1).padStart(2, '0')}`);
    const fake = fakePipeline({ mailRounds: 1, workers: 11, planPages: [partitions], piecesPerPartition: 1 });
    const result = (await runLocally(asl, fake.handlers)) as Record<string, number>;
    assert.equal(result.mails, 22);
    assert.equal(result.files, 25);
    assert.equal(result.outputRows, 2500);
  });

  it('retries a Transient error and then succeeds', async () => {
    const fake = fakePipeline({
      mailRounds: 1,
      workers: 4,
      planPages: [['2024-01-01']],
      piecesPerPartition: 1,
    });
    let failures = 0;
    const flaky: Handler = (input) => {
      if (input.action === 'compact' && failures < 2) {
        failures++;
        throw Object.assign(new Error('S3 SlowDown'), { name: 'Transient' });
      }
      return fake.handlers['dmarc-tsv-compact'](input);
    };
    const result = (await runLocally(defaultAsl, { ...fake.handlers, 'dmarc-tsv-compact': flaky })) as Record<
      string,
      number
    >;
    assert.equal(failures, 2);
    assert.equal(result.files, 1);
  });

  it('fails the run on a permanent error, keeping the error name and cause', async () => {
    const fake = fakePipeline({
      mailRounds: 1,
      workers: 4,
      planPages: [['2024-01-01']],
      piecesPerPartition: 1,
    });
    let calls = 0;
    const broken: Handler = (input) => {
      if (input.action === 'archive') {
        calls++;
        throw Object.assign(new Error('DMARC_MOVE is not a prefix'), { name: 'Config' });
      }
      return fake.handlers['dmarc-tsv-compact'](input);
    };
    await assert.rejects(
      runLocally(defaultAsl, { ...fake.handlers, 'dmarc-tsv-compact': broken }),
      (e: Error) => {
        const text = `${e.message} ${String((e as { cause?: unknown }).cause)}`;
        return text.includes('Config') || text.includes('DMARC_MOVE is not a prefix');
      },
    );
    assert.equal(calls, 1, 'a Config error is not retried');
  });
});
