/**
 * Runs an extracted definition with aws-local-stepfunctions and in-memory Lambda stand-ins: checks that the
 * definition the e2e test will run actually loops, folds totals and fails the way we expect.
 */
import type { RunOptions } from 'aws-local-stepfunctions';
import { taskFunctions } from '../lib/asl';

// aws-local-stepfunctions 3.0 needs Promise.withResolvers (Node 22+); Node 20 lacks it.
const promiseStatics = Promise as unknown as { withResolvers?: unknown };
promiseStatics.withResolvers ??= function withResolvers<T>() {
  let resolve!: (value: T) => void;
  let reject!: (reason?: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
};

export type Handler = (input: Record<string, unknown>) => Promise<unknown> | unknown;

/** Runs `asl` with each Lambda Task sent to `handlers[functionName]`; retries wait 0 ms. */
export async function runLocally(
  asl: Record<string, unknown>,
  handlers: Record<string, Handler>,
  input: Record<string, unknown> = {},
): Promise<unknown> {
  const { StateMachine } = await import('aws-local-stepfunctions');
  type LocalHandlers = NonNullable<NonNullable<RunOptions['overrides']>['taskResourceLocalHandlers']>;
  type LocalHandler = LocalHandlers[string];
  const byState: LocalHandlers = {};
  const retryIntervals: Record<string, number> = {};
  for (const [state, fn] of Object.entries(taskFunctions(asl))) {
    const handler = handlers[fn];
    if (handler === undefined) throw new Error(`no local handler for function ${fn} (state ${state})`);
    byState[state] = (async (i) => handler(i as Record<string, unknown>)) as LocalHandler;
    retryIntervals[state] = 0;
  }
  const machine = new StateMachine(asl as never, { validationOptions: { checkArn: false } });
  const execution = machine.run(input as never, {
    overrides: { taskResourceLocalHandlers: byState, retryIntervalOverrides: retryIntervals },
  });
  return execution.result;
}
