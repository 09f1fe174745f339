/** Stable names shared by the stack, the ASL extraction script and the end-to-end test. */

/** Tag on each Lambda naming its binary; scripts/extract-asl.ts maps Task ARNs through it. */
export const FUNCTION_TAG = 'dmarc-tsv:function';
export const INGEST_BINARY = 'dmarc-tsv-ingest';
export const COMPACT_BINARY = 'dmarc-tsv-compact';
