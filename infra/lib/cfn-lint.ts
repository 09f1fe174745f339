/** Runs cfn-lint (Python, from the repo's .venv or $CFN_LINT) on an in-process synthesized template. */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './functions';
import { synthTemplate } from './synth';

/**
 * Checks skipped, each for a reason:
 * - W3005: CDK emits explicit DependsOn next to a GetAtt of the same resource; redundant, harmless.
 */
export const IGNORED_CHECKS = ['W3005'];

export function cfnLintPath(): string | undefined {
  const candidates = [process.env.CFN_LINT, path.join(REPO_ROOT, '.venv', 'bin', 'cfn-lint')];
  return candidates.find((c): c is string => c !== undefined && c !== '' && fs.existsSync(c));
}

export function lintTemplate(context: Record<string, unknown> = {}): { status: number; output: string } {
  const binary = cfnLintPath();
  if (binary === undefined) {
    return {
      status: 127,
      output: 'cfn-lint not found: run scripts/setup (installs it into .venv) or set CFN_LINT\n',
    };
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmarc-tsv-cfn-lint-'));
  try {
    const file = path.join(dir, 'DmarcTsv.template.json');
    fs.writeFileSync(file, JSON.stringify(synthTemplate(context), null, 1));
    const run = spawnSync(binary, ['--ignore-checks', ...IGNORED_CHECKS, '--', file], { encoding: 'utf8' });
    return { status: run.status ?? 1, output: `${run.stdout ?? ''}${run.stderr ?? ''}` };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
