/**
 * Prints the state machine definition (ASL JSON) of a synthesized DmarcTsv template, tokens resolved:
 *
 *   npx tsx infra/scripts/extract-asl.ts infra/cdk.out/DmarcTsv.template.json > asl.json
 *   npx tsx infra/scripts/extract-asl.ts > asl.json        # synthesizes in-process (offline, no Rust build)
 *   npx tsx infra/scripts/extract-asl.ts --context ingestWorkers=2 > asl.json
 *
 *   npx tsx infra/scripts/extract-asl.ts --tasks [TEMPLATE.json]   # {"IngestBatch":"dmarc-tsv-ingest",...}
 *
 * Lambda Task Resources become arn:aws:lambda:us-east-1:123456789012:function:dmarc-tsv-ingest / -compact.
 * `--tasks` prints Task state name -> function name instead (aws-local-stepfunctions keys its
 * `taskResourceLocalHandlers` by state name).
 */
import * as fs from 'node:fs';
import { CfnTemplate, extractAsl, taskFunctions } from '../lib/asl';

function usage(): never {
  process.stderr.write(
    'usage: extract-asl.ts [--tasks] [TEMPLATE.json] [--state-machine LOGICAL_ID] [--context KEY=VALUE]...\n' +
      'Without TEMPLATE, synthesizes the DmarcTsv stack in-process (Rust bundling skipped).\n',
  );
  process.exit(2);
}

interface Args {
  template?: string;
  logicalId?: string;
  tasks: boolean;
  context: Record<string, string>;
}

function parseArgs(argv: string[]): Args {
  const out: Args = { context: {}, tasks: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--tasks') out.tasks = true;
    else if (arg === '--state-machine') out.logicalId = argv[++i] ?? usage();
    else if (arg === '--context' || arg === '-c') {
      const kv = argv[++i] ?? usage();
      const eq = kv.indexOf('=');
      if (eq < 1) usage();
      out.context[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (arg === '--help' || arg === '-h' || arg.startsWith('-') || out.template !== undefined) usage();
    else out.template = arg;
  }
  return out;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  let template: CfnTemplate;
  if (args.template !== undefined) {
    template = JSON.parse(fs.readFileSync(args.template, 'utf8')) as CfnTemplate;
  } else {
    const { synthTemplate } = await import('../lib/synth');
    template = synthTemplate(args.context) as unknown as CfnTemplate;
  }
  const asl = extractAsl(template, args.logicalId);
  process.stdout.write(JSON.stringify(args.tasks ? taskFunctions(asl) : asl, null, 2) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`extract-asl: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
