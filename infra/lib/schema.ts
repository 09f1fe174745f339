/**
 * The output columns, read from infra/schema/columns.json (= `dmarc-tsv schema --json`, generated from the
 * single Rust column table). Never list columns by hand here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Column {
  readonly name: string;
  readonly type: string;
  readonly comment: string;
}

export const COLUMNS_FILE = path.resolve(__dirname, '..', 'schema', 'columns.json');

/** Hive/Glue types the table may use; anything else in the schema file is a mistake worth failing synth on. */
const GLUE_TYPES = new Set(['string', 'int', 'bigint', 'double', 'boolean', 'timestamp', 'date']);

export class SchemaError extends Error {}

export function parseColumns(text: string): Column[] {
  const data: unknown = JSON.parse(text);
  if (!Array.isArray(data) || data.length === 0)
    throw new SchemaError('columns.json: expected a non-empty array');
  const seen = new Set<string>();
  return data.map((item: unknown, i) => {
    const c = item as Partial<Column>;
    if (typeof c?.name !== 'string' || !/^[a-z_][a-z0-9_]*$/.test(c.name)) {
      throw new SchemaError(`columns.json[${i}]: bad name ${JSON.stringify(c?.name)}`);
    }
    if (seen.has(c.name)) throw new SchemaError(`columns.json: duplicate column ${c.name}`);
    seen.add(c.name);
    if (typeof c.type !== 'string' || !GLUE_TYPES.has(c.type)) {
      throw new SchemaError(`columns.json: column ${c.name} has unsupported type ${JSON.stringify(c.type)}`);
    }
    return { name: c.name, type: c.type, comment: typeof c.comment === 'string' ? c.comment : '' };
  });
}

export function loadColumns(file = COLUMNS_FILE): Column[] {
  return parseColumns(fs.readFileSync(file, 'utf8'));
}
