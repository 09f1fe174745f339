// Runs one execution of a state machine definition (ASL JSON) with aws-local-stepfunctions, sending
// every Lambda Task to `cargo lambda watch` over HTTP (it routes by bare function name, so the ARN the
// template carries is reduced to its name here).
//
// Usage: node sfn.mjs --asl FILE --lambda-endpoint http://127.0.0.1:PORT [--input JSON]
//        [--events FILE] [--task-timeout SECONDS]
// Prints the execution output as one JSON line on stdout; exits 1 when the execution fails.

// Node 20 has no Promise.withResolvers; aws-local-stepfunctions 3 needs it.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers() {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  };
}

import { readFileSync, appendFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

const { StateMachine, ExecutionError } = await import('aws-local-stepfunctions');

const LAMBDA_INVOKE_INTEGRATION = /^arn:aws:states:::lambda:invoke(\.waitForTaskToken)?$/;

function fail(message) {
  process.stderr.write(`sfn.mjs: ${message}\n`);
  process.exit(2);
}

/** `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]` or a bare name -> NAME. */
function functionName(resource) {
  const match = /^arn:aws[\w-]*:lambda:[^:]*:[^:]*:function:([^:]+)(:.+)?$/.exec(resource);
  if (match) return match[1];
  if (/^[A-Za-z0-9_-]+$/.test(resource)) return resource;
  return null;
}

/** Every Task state, at any depth (Map ItemProcessor/Iterator, Parallel branches). */
function taskStates(definition, found = []) {
  for (const [name, state] of Object.entries(definition.States ?? {})) {
    if (state.Type === 'Task') found.push([name, state]);
    if (state.Type === 'Map') taskStates(state.ItemProcessor ?? state.Iterator ?? {}, found);
    if (state.Type === 'Parallel') for (const branch of state.Branches ?? []) taskStates(branch, found);
  }
  return found;
}

/** An Error whose name is the Lambda errorType, so Retry/Catch `ErrorEquals` match as in AWS. */
function lambdaError(errorType, message) {
  const error = new Error(`${errorType}: ${message}`);
  error.name = errorType;
  return error;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One POST with node:http (fetch would give up after 5 minutes without response headers, and a
 * drain may legitimately take longer). Resolves {status, headers, text}; rejects with the socket
 * error (its `code` says what happened).
 */
function post(url, body) {
  return new Promise((resolve, reject) => {
    const request = http.request(url, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

/**
 * Invokes a function through the Invoke API of `cargo lambda watch`. A handled error comes back
 * with the payload `{errorType, errorMessage}`. A function process that dies mid-invocation
 * (failpoint abort) makes the harness restart the server, which drops this connection: AWS reports
 * that case as `Runtime.ExitError`, so do we. While the server restarts, connections are refused:
 * wait for it (at most two minutes).
 */
async function invoke(endpoint, name, payload, log) {
  const started = Date.now();
  const url = `${endpoint}/2015-03-31/functions/${name}/invocations`;
  let response;
  for (let attempt = 0; ; attempt += 1) {
    try {
      response = await post(url, JSON.stringify(payload));
      break;
    } catch (error) {
      const code = error?.code ?? '';
      if (code === 'ECONNREFUSED' && attempt < 600) {
        await sleep(200);
        continue;
      }
      log({ name, payload, status: 0, body: `connection lost: ${code || error.message}`, ms: Date.now() - started });
      throw lambdaError('Runtime.ExitError', `${name}: the function process exited (${code || error.message})`);
    }
  }
  const text = response.text;
  let body = null;
  try {
    body = text.length ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  log({ name, payload, status: response.status, body: body ?? text, ms: Date.now() - started });
  const functionError = response.headers['x-amz-function-error'];
  if (response.status === 200 && !functionError) return body;
  if (body && typeof body === 'object' && typeof body.errorType === 'string') {
    throw lambdaError(body.errorType, body.errorMessage ?? '');
  }
  throw lambdaError('Lambda.ServiceException', `HTTP ${response.status}: ${text.slice(0, 500)}`);
}

function localHandlers(definition, endpoint, log) {
  const handlers = {};
  for (const [stateName, state] of taskStates(definition)) {
    if (LAMBDA_INVOKE_INTEGRATION.test(state.Resource)) {
      // Optimised integration: the state's input is {FunctionName, Payload}; the result wraps the
      // function's output in `Payload` like the real service does.
      handlers[stateName] = async (input) => {
        const name = functionName(String(input?.FunctionName ?? ''));
        if (!name) throw lambdaError('States.Runtime', `bad FunctionName in ${stateName}`);
        const result = await invoke(endpoint, name, input.Payload ?? {}, log);
        return { ExecutedVersion: '$LATEST', Payload: result, StatusCode: 200 };
      };
      continue;
    }
    const name = functionName(state.Resource);
    if (!name) fail(`task state ${stateName}: unsupported resource ${state.Resource}`);
    handlers[stateName] = (input) => invoke(endpoint, name, input, log);
  }
  return handlers;
}

async function main() {
  const { values } = parseArgs({
    options: {
      asl: { type: 'string' },
      'lambda-endpoint': { type: 'string' },
      input: { type: 'string', default: '{}' },
      events: { type: 'string' },
      'retry-interval-ms': { type: 'string', default: '200' },
    },
  });
  if (!values.asl) fail('--asl FILE is required');
  if (!values['lambda-endpoint']) fail('--lambda-endpoint URL is required');
  const definition = JSON.parse(readFileSync(values.asl, 'utf8'));
  const input = JSON.parse(values.input);
  const eventsFile = values.events;
  if (eventsFile) writeFileSync(eventsFile, '');
  const log = (entry) => {
    if (eventsFile) appendFileSync(eventsFile, `${JSON.stringify({ invoke: entry })}\n`);
  };

  const handlers = localHandlers(definition, values['lambda-endpoint'].replace(/\/$/, ''), log);
  // Retry intervals of minutes would only slow the harness down: keep the policy, shorten the waits.
  const retryInterval = Number(values['retry-interval-ms']);
  const retryIntervalOverrides = {};
  const waitTimeOverrides = {};
  const visit = (def) => {
    for (const [name, state] of Object.entries(def.States ?? {})) {
      if (state.Retry) retryIntervalOverrides[name] = retryInterval;
      if (state.Type === 'Wait') waitTimeOverrides[name] = 10;
      if (state.Type === 'Map') visit(state.ItemProcessor ?? state.Iterator ?? {});
      if (state.Type === 'Parallel') for (const b of state.Branches ?? []) visit(b);
    }
  };
  visit(definition);

  const machine = new StateMachine(definition, { validationOptions: { checkArn: false } });
  const execution = machine.run(input, {
    overrides: { taskResourceLocalHandlers: handlers, retryIntervalOverrides, waitTimeOverrides },
    context: { Execution: { Input: input, StartTime: new Date().toISOString(), Name: `e2e-${Date.now()}` } },
  });
  const drainEvents = (async () => {
    for await (const event of execution.eventLogs) {
      if (eventsFile) appendFileSync(eventsFile, `${JSON.stringify(event)}\n`);
    }
  })();
  try {
    const output = await execution.result;
    await drainEvents.catch(() => {});
    process.stdout.write(`${JSON.stringify(output)}\n`);
  } catch (error) {
    await drainEvents.catch(() => {});
    const cause = error instanceof ExecutionError ? error.cause ?? error : error;
    process.stderr.write(`sfn.mjs: execution failed: ${cause?.name ?? ''} ${cause?.message ?? error}\n`);
    process.exit(1);
  }
}

await main();
