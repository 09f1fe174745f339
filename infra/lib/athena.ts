/**
 * Glue database + table over the output prefix (partition projection on `dt`, no crawler, no MSCK), an
 * Athena workgroup with enforced, encrypted results and a scan cutoff, and the saved queries.
 */
import { Stack } from 'aws-cdk-lib';
import * as athena from 'aws-cdk-lib/aws-athena';
import * as glue from 'aws-cdk-lib/aws-glue';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { DmarcTsvConfig } from './config';
import { loadQueries } from './queries';
import { Column, loadColumns } from './schema';

export interface AnalyticsProps {
  readonly config: DmarcTsvConfig;
  readonly bucket: s3.IBucket;
  readonly key?: kms.IKey;
  /** Override for tests; default infra/schema/columns.json. */
  readonly columns?: Column[];
}

/** First date the projection covers: DMARC reporting (RFC 7489 drafts) did not exist before. */
export const PROJECTION_START = '2012-01-01';

export class Analytics extends Construct {
  readonly database: glue.CfnDatabase;
  readonly table: glue.CfnTable;
  readonly workGroup: athena.CfnWorkGroup;

  constructor(scope: Construct, id: string, props: AnalyticsProps) {
    super(scope, id);
    const { config, bucket, key } = props;
    const account = Stack.of(this).account;
    const columns = props.columns ?? loadColumns();
    const location = `s3://${bucket.bucketName}/${config.prefixes.output}`;

    this.database = new glue.CfnDatabase(this, 'Database', {
      catalogId: account,
      databaseInput: { name: config.databaseName, description: 'dmarc-tsv: DMARC aggregate report rows' },
    });
    this.table = new glue.CfnTable(this, 'Table', {
      catalogId: account,
      databaseName: config.databaseName,
      tableInput: {
        name: config.tableName,
        description: 'One row per DMARC report record (dmarc-tsv output); dt = report begin date, UTC',
        tableType: 'EXTERNAL_TABLE',
        parameters: {
          EXTERNAL: 'TRUE',
          classification: config.format,
          compressionType: 'gzip',
          'projection.enabled': 'true',
          'projection.dt.type': 'date',
          'projection.dt.format': 'yyyy-MM-dd',
          'projection.dt.range': `${PROJECTION_START},NOW`,
          'projection.dt.interval': '1',
          'projection.dt.interval.unit': 'DAYS',
          'storage.location.template': `${location}dt=\${dt}/`,
          ...(config.format === 'csv' ? { 'skip.header.line.count': '1' } : {}),
        },
        partitionKeys: [{ name: 'dt', type: 'string', comment: 'report begin date (UTC), yyyy-MM-dd' }],
        storageDescriptor: {
          location,
          columns: columns.map((c) => ({ name: c.name, type: c.type, comment: c.comment })),
          // Gzip is transparent to TextInputFormat: files end in .gz and Athena decompresses them.
          inputFormat: 'org.apache.hadoop.mapred.TextInputFormat',
          outputFormat: 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat',
          compressed: true,
          serdeInfo: serde(config.format),
        },
      },
    });
    this.table.addResourceDependency(this.database);

    const resultLocation = `s3://${bucket.bucketName}/${config.prefixes.athenaResults}`;
    this.workGroup = new athena.CfnWorkGroup(this, 'WorkGroup', {
      name: config.workGroupName,
      description: 'dmarc-tsv: queries over the DMARC report table',
      state: 'ENABLED',
      recursiveDeleteOption: true,
      workGroupConfiguration: {
        enforceWorkGroupConfiguration: true,
        publishCloudWatchMetricsEnabled: true,
        bytesScannedCutoffPerQuery: config.bytesScannedCutoffMb * 1024 * 1024,
        engineVersion: { selectedEngineVersion: 'Athena engine version 3' },
        resultConfiguration: {
          outputLocation: resultLocation,
          encryptionConfiguration: key
            ? { encryptionOption: 'SSE_KMS', kmsKey: key.keyArn }
            : { encryptionOption: 'SSE_S3' },
        },
      },
    });

    for (const query of loadQueries(config.databaseName, config.tableName)) {
      const named = new athena.CfnNamedQuery(this, `Query${query.name}`, {
        name: query.name,
        description: query.description.slice(0, 1024),
        database: config.databaseName,
        workGroup: this.workGroup.name,
        queryString: query.sql,
      });
      named.addResourceDependency(this.workGroup);
      named.addResourceDependency(this.table);
    }
  }
}

/** TSV: LazySimpleSerDe, tab-delimited, no quoting (the writer never emits tab/CR/LF in a field). */
function serde(format: 'tsv' | 'csv'): glue.CfnTable.SerdeInfoProperty {
  if (format === 'csv') {
    // The CSV writer quotes per RFC 4180, which only OpenCSVSerde understands.
    return {
      serializationLibrary: 'org.apache.hadoop.hive.serde2.OpenCSVSerde',
      parameters: { separatorChar: ',', quoteChar: '"', escapeChar: '\\' },
    };
  }
  return {
    serializationLibrary: 'org.apache.hadoop.hive.serde2.lazy.LazySimpleSerDe',
    parameters: { 'field.delim': '\t', 'serialization.format': '\t' },
  };
}
