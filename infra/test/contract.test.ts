/**
 * Contracts with the Rust side: Glue columns = infra/schema/columns.json = `dmarc-tsv schema --json`
 * (when the binary is built), named queries = doc/athena-queries.sql, cfn-lint on the template.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { cfnLintPath, lintTemplate } from '../lib/cfn-lint';
import { DEFAULTS } from '../lib/config';
import { REPO_ROOT } from '../lib/functions';
import { loadQueries, parseQueries, QUERIES_FILE } from '../lib/queries';
import { COLUMNS_FILE, loadColumns, parseColumns, SchemaError } from '../lib/schema';
import { resourcesOfType, synth } from './helpers';

describe('column contract', () => {
  const columns = loadColumns();

  it('Glue table columns equal infra/schema/columns.json (names, order, types, comments)', () => {
    const [[, table]] = resourcesOfType(synth(), 'AWS::Glue::Table');
    const glue = table.Properties.TableInput.StorageDescriptor.Columns as {
      Name: string;
      Type: string;
      Comment: string;
    }[];
    assert.deepEqual(
      glue.map((c) => [c.Name, c.Type, c.Comment]),
      columns.map((c) => [c.name, c.type, c.comment]),
    );
  });

  it('columns.json matches `dmarc-tsv schema --json` of the built binary', () => {
    const binary = path.join(REPO_ROOT, 'target', 'debug', 'dmarc-tsv');
    // A missing tool is an error, never a skip: scripts/test builds the binary before this layer.
    assert.ok(
      fs.existsSync(binary),
      'target/debug/dmarc-tsv is not built: run `cargo build -p dmarc-tsv` (scripts/test does)',
    );
    const run = spawnSync(binary, ['schema', '--json'], { encoding: 'utf8' });
    assert.equal(
      run.status,
      0,
      `dmarc-tsv schema --json failed (stale binary? rebuild it): ${run.stderr.trim()}`,
    );
    assert.deepEqual(parseColumns(run.stdout), columns);
  });

  it('rejects a schema file with unknown types or duplicate names', () => {
    assert.throws(() => parseColumns('[{"name":"a","type":"varchar(3)"}]'), SchemaError);
    assert.throws(() => parseColumns('[{"name":"a","type":"int"},{"name":"a","type":"int"}]'), SchemaError);
    assert.throws(() => parseColumns('[]'), SchemaError);
  });
});

describe('saved queries file', () => {
  it('parses into named blocks with descriptions, each reading the table', () => {
    const queries = parseQueries(fs.readFileSync(QUERIES_FILE, 'utf8'));
    assert.ok(queries.length >= 4);
    for (const q of queries) {
      assert.ok(q.description.length > 0, q.name);
      assert.ok(q.sql.endsWith(';'), q.name);
      assert.ok(!q.sql.includes('-- name:'), q.name);
    }
  });
});

describe('cfn-lint', () => {
  it('finds no errors or warnings in the full template', () => {
    assert.ok(
      cfnLintPath() !== undefined,
      'cfn-lint not installed: run scripts/setup (it goes into .venv) or set CFN_LINT',
    );
    const result = lintTemplate({
      recipients: 'dmarc@example.com',
      activateRuleSet: true,
      alarmEmail: 'ops@example.com',
    });
    assert.equal(result.status, 0, result.output);
  });
});

describe('doc/deploy.md', () => {
  it('documents every context key with its default', () => {
    const doc = fs.readFileSync(path.join(REPO_ROOT, 'doc', 'deploy.md'), 'utf8');
    for (const [key, value] of Object.entries(DEFAULTS)) {
      const row = doc.split('\n').find((line) => line.startsWith(`| \`${key}\` |`));
      assert.ok(row, `context key ${key} missing from doc/deploy.md`);
      const shown = value === '' ? '(none)' : `\`${String(value)}\``;
      assert.ok(row.includes(`| ${shown} |`), `doc/deploy.md shows a different default for ${key}: ${row}`);
    }
  });
});

/** A Python with duckdb: $DUCKDB_PYTHON, else the repo's .venv (scripts/setup installs duckdb there). */
function duckdbPython(): string | undefined {
  const candidates = [process.env.DUCKDB_PYTHON, path.join(REPO_ROOT, '.venv', 'bin', 'python')];
  return candidates.find(
    (c): c is string =>
      c !== undefined && c !== '' && fs.existsSync(c) && spawnSync(c, ['-c', 'import duckdb']).status === 0,
  );
}

describe('saved queries on DuckDB (Athena stand-in)', () => {
  it('every query runs against a table with the schema columns', () => {
    const python = duckdbPython();
    assert.ok(
      python !== undefined,
      'no Python with duckdb: run scripts/setup (it goes into .venv) or set DUCKDB_PYTHON',
    );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmarc-queries-'));
    try {
      const queriesFile = path.join(dir, 'queries.json');
      const queries = loadQueries('dmarc', 'dmarc_reports');
      fs.writeFileSync(queriesFile, JSON.stringify(queries));
      const run = spawnSync(
        python,
        [path.join(__dirname, 'run_queries_duckdb.py'), COLUMNS_FILE, queriesFile],
        { encoding: 'utf8' },
      );
      assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
      const results = Object.fromEntries(
        run.stdout
          .trim()
          .split('\n')
          .map((line) => line.split('\t')),
      );
      assert.deepEqual(Object.keys(results).sort(), queries.map((q) => q.name).sort());
      assert.equal(results.TopFailingSources, '1', 'the recent failing row is found');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
