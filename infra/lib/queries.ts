/** Named Athena queries, parsed from doc/athena-queries.sql (the one source; see its header). */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const QUERIES_FILE = path.resolve(__dirname, '..', '..', 'doc', 'athena-queries.sql');
/** The table reference the .sql file is written against; replaced with the deployed names. */
export const DEFAULT_TABLE_REF = '"dmarc"."dmarc_reports"';

export interface NamedQuery {
  readonly name: string;
  readonly description: string;
  readonly sql: string;
}

export class QueryFileError extends Error {}

export function parseQueries(text: string): NamedQuery[] {
  const blocks = text.split(/^-- name:[ \t]*/m).slice(1);
  if (blocks.length === 0) throw new QueryFileError('no "-- name:" blocks found');
  const names = new Set<string>();
  return blocks.map((block) => {
    const [firstLine, ...rest] = block.split('\n');
    const name = firstLine.trim();
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name))
      throw new QueryFileError(`bad query name ${JSON.stringify(name)}`);
    if (names.has(name)) throw new QueryFileError(`duplicate query name ${name}`);
    names.add(name);
    let description = '';
    const sqlLines: string[] = [];
    for (const line of rest) {
      const d = /^-- description:[ \t]*(.*)$/.exec(line);
      if (d && sqlLines.length === 0) description = d[1].trim();
      else if (!line.startsWith('--') || sqlLines.length > 0) sqlLines.push(line);
    }
    const sql = sqlLines.join('\n').trim();
    if (!sql.includes(DEFAULT_TABLE_REF))
      throw new QueryFileError(`query ${name} does not read ${DEFAULT_TABLE_REF}`);
    return { name, description, sql };
  });
}

export function loadQueries(database: string, table: string, file = QUERIES_FILE): NamedQuery[] {
  return parseQueries(fs.readFileSync(file, 'utf8')).map((q) => ({
    ...q,
    sql: q.sql.split(DEFAULT_TABLE_REF).join(`"${database}"."${table}"`),
  }));
}
