/**
 * Every deploy-time knob of the DmarcTsv stack, read from CDK context (`-c key=value` or cdk.json).
 * Defaults match the Rust settings (`DMARC_*`), so a Lambda and `dmarc-tsv run` agree on the key layout.
 * doc/deploy.md documents each key; keep the two in step.
 */
import { Node } from 'constructs';

export interface Prefixes {
  readonly incoming: string;
  readonly staging: string;
  readonly state: string;
  readonly output: string;
  readonly archive: string;
  readonly quarantine: string;
  readonly athenaResults: string;
}

export interface FunctionSizing {
  readonly memoryMb: number;
  readonly timeoutSeconds: number;
}

export interface DmarcTsvConfig {
  /** Addresses or domains SES accepts reports for; empty = no receipt rule (mail arrives another way). */
  readonly recipients: string[];
  /** Add the rule to this existing receipt rule set instead of creating a new one. */
  readonly existingRuleSetName?: string;
  /** Make the new rule set the active one (only one can be active per account and region). */
  readonly activateRuleSet: boolean;
  /** Name of the new rule set (ignored with existingRuleSetName). */
  readonly ruleSetName: string;
  /** Name of the receipt rule (unique within its rule set). */
  readonly ruleName: string;
  /** Reject mail not delivered over TLS. */
  readonly requireTls: boolean;
  /** `kms` = customer managed key for bucket, queues, topic, logs; `s3` = S3/SQS managed keys. */
  readonly encryption: 'kms' | 's3';
  readonly versioning: boolean;
  readonly prefixes: Prefixes;
  readonly archiveTransitionDays: number;
  /** 0 = keep archived mails forever. */
  readonly archiveExpireDays: number;
  /**
   * DMARC_ARCHIVEFORMAT: `mbox` = one gzipped mbox per staged batch (one PUT per batch plus a GET
   * per mail); `mail` = the seed's one object per mail (one S3 COPY, $5 per million, per mail).
   */
  readonly archiveFormat: 'mail' | 'mbox';
  readonly quarantineExpireDays: number;
  readonly athenaResultsExpireDays: number;
  readonly accessLogsExpireDays: number;
  readonly dlqMaxReceiveCount: number;
  /** Queue visibility timeout = DMARC_SQSPROCESSINGTIME; at least 6 x the ingest timeout (AWS guidance). */
  readonly sqsProcessingTimeSeconds: number;
  readonly ingest: FunctionSizing;
  readonly compact: FunctionSizing;
  readonly logRetentionDays: number;
  readonly maxRecords: number;
  readonly pollMessages: number;
  readonly compactRows: number;
  readonly format: 'tsv' | 'csv';
  readonly ingestWorkers: number;
  readonly maxIngestIterations: number;
  readonly compactWorkers: number;
  readonly stateMachineTimeoutMinutes: number;
  /** EventBridge Scheduler expression; `none` disables the schedule. */
  readonly schedule: string;
  /** Retries of a failed StartExecution by EventBridge Scheduler before the event goes to its DLQ. */
  readonly scheduleRetries: number;
  readonly scheduleTimezone: string;
  readonly databaseName: string;
  readonly tableName: string;
  readonly workGroupName: string;
  readonly bytesScannedCutoffMb: number;
  readonly alarmEmail?: string;
}

/** Context keys with their defaults; doc/deploy.md mirrors this table. */
export const DEFAULTS = {
  recipients: '',
  existingRuleSetName: '',
  activateRuleSet: false,
  ruleSetName: 'dmarc-tsv',
  ruleName: 'dmarc-tsv-reports',
  requireTls: false,
  encryption: 'kms',
  versioning: false,
  incomingPrefix: 'incoming/',
  stagingPrefix: 'staging/',
  statePrefix: 'state/',
  outputPrefix: 'dmarc/',
  archivePrefix: 'archive/',
  quarantinePrefix: 'quarantine/',
  athenaResultsPrefix: 'athena-results/',
  archiveTransitionDays: 30,
  archiveExpireDays: 400,
  archiveFormat: 'mbox',
  quarantineExpireDays: 90,
  athenaResultsExpireDays: 30,
  accessLogsExpireDays: 90,
  dlqMaxReceiveCount: 5,
  sqsProcessingTimeSeconds: 3600,
  ingestMemoryMb: 1024,
  ingestTimeoutSeconds: 300,
  compactMemoryMb: 2048,
  compactTimeoutSeconds: 900,
  logRetentionDays: 90,
  maxRecords: 32,
  pollMessages: 10,
  compactRows: 262144,
  format: 'tsv',
  ingestWorkers: 4,
  maxIngestIterations: 20,
  compactWorkers: 4,
  stateMachineTimeoutMinutes: 360,
  schedule: 'cron(0 3 * * ? *)',
  scheduleTimezone: 'UTC',
  scheduleRetries: 3,
  databaseName: 'dmarc',
  tableName: 'dmarc_reports',
  workGroupName: 'dmarc-tsv',
  bytesScannedCutoffMb: 10240,
  alarmEmail: '',
  // Read by bin/app.ts before the stack exists (it must set aws:cdk:bundling-stacks first).
  skipBundling: false,
} as const;

export type ContextKey = keyof typeof DEFAULTS;

/** The retention periods CloudWatch Logs accepts. */
const LOG_RETENTION_DAYS = [
  1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
];

export class ConfigError extends Error {}

/** Reads context values that may arrive as strings (`-c x=5`) or JSON values (cdk.json). */
class ContextReader {
  constructor(private readonly node: Node) {}

  private raw(key: ContextKey): unknown {
    const value = this.node.tryGetContext(key);
    return value === undefined || value === null ? DEFAULTS[key] : value;
  }

  string(key: ContextKey): string {
    const value = this.raw(key);
    if (typeof value !== 'string')
      throw new ConfigError(`context ${key}: expected a string, got ${JSON.stringify(value)}`);
    return value.trim();
  }

  bool(key: ContextKey): boolean {
    const value = this.raw(key);
    if (typeof value === 'boolean') return value;
    if (value === 'true') return true;
    if (value === 'false') return false;
    throw new ConfigError(`context ${key}: expected true or false, got ${JSON.stringify(value)}`);
  }

  int(key: ContextKey, min: number, max: number): number {
    const value = this.raw(key);
    const n = typeof value === 'number' ? value : Number(String(value).trim());
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ConfigError(
        `context ${key}: expected an integer in ${min}..${max}, got ${JSON.stringify(value)}`,
      );
    }
    return n;
  }

  oneOfInts(key: ContextKey, allowed: number[]): number {
    const n = this.int(key, Math.min(...allowed), Math.max(...allowed));
    if (!allowed.includes(n))
      throw new ConfigError(`context ${key}: expected one of ${allowed.join(', ')}, got ${n}`);
    return n;
  }

  list(key: ContextKey): string[] {
    const value = this.raw(key);
    const items = Array.isArray(value) ? value.map(String) : String(value).split(',');
    return items.map((s) => s.trim()).filter((s) => s.length > 0);
  }

  /** SES recipient conditions: an address (`dmarc@example.com`) or a domain (`example.com`, `.example.com`). */
  recipients(key: ContextKey): string[] {
    const items = this.list(key);
    for (const item of items) {
      if (!/^([^\s@]+@)?\.?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/.test(item)) {
        throw new ConfigError(
          `context ${key}: ${JSON.stringify(item)} is neither an e-mail address nor a domain`,
        );
      }
    }
    return items;
  }

  prefix(key: ContextKey): string {
    const value = this.string(key);
    // Prefixes are joined to keys and used in IAM resource ARNs: keep them plain and slash-terminated.
    if (!/^[A-Za-z0-9!_.()'-]+(\/[A-Za-z0-9!_.()'-]+)*\/$/.test(value)) {
      throw new ConfigError(
        `context ${key}: expected a relative prefix ending with '/', got ${JSON.stringify(value)}`,
      );
    }
    return value;
  }

  /** SES rule / rule set / workgroup names: letters, digits, `.`, `_`, `-`. */
  name(key: ContextKey): string {
    const value = this.string(key);
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(value)) {
      throw new ConfigError(
        `context ${key}: expected a name of letters, digits, '.', '_' or '-', got ${JSON.stringify(value)}`,
      );
    }
    return value;
  }

  /** Glue/Athena identifiers: lower-case letters, digits and `_` (no quoting needed in SQL). */
  glueName(key: ContextKey): string {
    const value = this.string(key);
    if (!/^[a-z_][a-z0-9_]{0,127}$/.test(value)) {
      throw new ConfigError(
        `context ${key}: expected lower-case letters, digits or '_', got ${JSON.stringify(value)}`,
      );
    }
    return value;
  }

  oneOf<T extends string>(key: ContextKey, allowed: readonly T[]): T {
    const value = this.string(key);
    if (!(allowed as readonly string[]).includes(value)) {
      throw new ConfigError(
        `context ${key}: expected one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`,
      );
    }
    return value as T;
  }
}

export function readConfig(node: Node): DmarcTsvConfig {
  const ctx = new ContextReader(node);
  const prefixes: Prefixes = {
    incoming: ctx.prefix('incomingPrefix'),
    staging: ctx.prefix('stagingPrefix'),
    state: ctx.prefix('statePrefix'),
    output: ctx.prefix('outputPrefix'),
    archive: ctx.prefix('archivePrefix'),
    quarantine: ctx.prefix('quarantinePrefix'),
    athenaResults: ctx.prefix('athenaResultsPrefix'),
  };
  assertDisjoint(prefixes);
  const ingest = {
    memoryMb: ctx.int('ingestMemoryMb', 128, 10240),
    timeoutSeconds: ctx.int('ingestTimeoutSeconds', 10, 900),
  };
  const compact = {
    memoryMb: ctx.int('compactMemoryMb', 128, 10240),
    timeoutSeconds: ctx.int('compactTimeoutSeconds', 10, 900),
  };
  const alarmEmail = ctx.string('alarmEmail');
  const existingRuleSetName = ctx.string('existingRuleSetName');
  const config: DmarcTsvConfig = {
    recipients: ctx.recipients('recipients'),
    existingRuleSetName: existingRuleSetName === '' ? undefined : existingRuleSetName,
    activateRuleSet: ctx.bool('activateRuleSet'),
    ruleSetName: ctx.name('ruleSetName'),
    ruleName: ctx.name('ruleName'),
    requireTls: ctx.bool('requireTls'),
    encryption: ctx.oneOf('encryption', ['kms', 's3'] as const),
    versioning: ctx.bool('versioning'),
    prefixes,
    archiveTransitionDays: ctx.int('archiveTransitionDays', 1, 36500),
    archiveExpireDays: ctx.int('archiveExpireDays', 0, 36500),
    archiveFormat: ctx.oneOf('archiveFormat', ['mail', 'mbox'] as const),
    quarantineExpireDays: ctx.int('quarantineExpireDays', 1, 36500),
    athenaResultsExpireDays: ctx.int('athenaResultsExpireDays', 1, 36500),
    accessLogsExpireDays: ctx.int('accessLogsExpireDays', 1, 36500),
    dlqMaxReceiveCount: ctx.int('dlqMaxReceiveCount', 1, 1000),
    sqsProcessingTimeSeconds: ctx.int('sqsProcessingTimeSeconds', 60, 43200),
    ingest,
    compact,
    logRetentionDays: ctx.oneOfInts('logRetentionDays', LOG_RETENTION_DAYS),
    maxRecords: ctx.int('maxRecords', 1, 1_000_000),
    pollMessages: ctx.int('pollMessages', 1, 10),
    compactRows: ctx.int('compactRows', 1, 100_000_000),
    format: ctx.oneOf('format', ['tsv', 'csv'] as const),
    ingestWorkers: ctx.int('ingestWorkers', 1, 40),
    maxIngestIterations: ctx.int('maxIngestIterations', 1, 1000),
    compactWorkers: ctx.int('compactWorkers', 1, 40),
    stateMachineTimeoutMinutes: ctx.int('stateMachineTimeoutMinutes', 5, 60 * 24 * 7),
    schedule: ctx.string('schedule'),
    scheduleTimezone: ctx.string('scheduleTimezone'),
    scheduleRetries: ctx.int('scheduleRetries', 0, 185),
    databaseName: ctx.glueName('databaseName'),
    tableName: ctx.glueName('tableName'),
    workGroupName: ctx.name('workGroupName'),
    bytesScannedCutoffMb: ctx.int('bytesScannedCutoffMb', 10, 1_000_000_000),
    alarmEmail: alarmEmail === '' ? undefined : alarmEmail,
  };
  if (config.archiveExpireDays !== 0 && config.archiveExpireDays <= config.archiveTransitionDays) {
    throw new ConfigError(
      'context archiveExpireDays must be 0 (never) or greater than archiveTransitionDays',
    );
  }
  if (config.sqsProcessingTimeSeconds < 6 * config.ingest.timeoutSeconds) {
    // A message must stay invisible while a (retried) ingest call may still be working on it.
    throw new ConfigError('context sqsProcessingTimeSeconds must be at least 6 x ingestTimeoutSeconds');
  }
  assertScheduleOutlastsRuns(config);
  if (config.existingRuleSetName !== undefined && config.activateRuleSet) {
    throw new ConfigError(
      'context activateRuleSet applies to the new rule set only; drop it with existingRuleSetName',
    );
  }
  return config;
}

/**
 * Two overlapping executions could compact the same partition at once, which the design forbids; the
 * execution timeout bounds a run, so a schedule must not fire more often than that. Only `rate(...)` can be
 * checked here; for cron expressions doc/deploy.md states the rule.
 */
function assertScheduleOutlastsRuns(config: DmarcTsvConfig): void {
  if (config.schedule === 'none') return;
  if (!/^(cron|rate|at)\(.+\)$/.test(config.schedule)) {
    throw new ConfigError(
      `context schedule: expected cron(...), rate(...), at(...) or none, got ${JSON.stringify(config.schedule)}`,
    );
  }
  const rate = /^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$/.exec(config.schedule);
  if (!rate) return;
  const minutes =
    Number(rate[1]) * (rate[2].startsWith('minute') ? 1 : rate[2].startsWith('hour') ? 60 : 1440);
  if (minutes <= config.stateMachineTimeoutMinutes) {
    throw new ConfigError(
      `context schedule ${config.schedule} fires more often than stateMachineTimeoutMinutes ` +
        `(${config.stateMachineTimeoutMinutes}): runs could overlap`,
    );
  }
}

/** A key must belong to exactly one prefix, else grants and lifecycle rules of one area leak into another. */
function assertDisjoint(prefixes: Prefixes): void {
  const entries = Object.entries(prefixes);
  for (const [nameA, a] of entries) {
    for (const [nameB, b] of entries) {
      if (nameA !== nameB && b.startsWith(a)) {
        throw new ConfigError(
          `prefix ${nameB} (${b}) lies inside prefix ${nameA} (${a}); prefixes must be disjoint`,
        );
      }
    }
  }
}
