#!/usr/bin/env bash
# End-to-end harness entry point (called by `npm test` in tests/e2e, i.e. the `e2e` layer of
# scripts/test). Checks that every tool is there, then runs tests/e2e/e2e.py with the project's
# venv. Any missing tool is a failure, never a skip. Extra arguments go to e2e.py (--help).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${DMARC_E2E_VENV:-$ROOT/.venv}"

missing=()
[[ -x "$VENV/bin/python" ]] || missing+=("$VENV/bin/python (scripts/setup creates the venv)")
[[ -x "$VENV/bin/moto_server" ]] || missing+=("moto_server in $VENV (moto[server] in scripts/requirements-test.txt)")
[[ -x "$VENV/bin/cargo-lambda" ]] || missing+=("cargo-lambda in $VENV (cargo-lambda in scripts/requirements-test.txt)")
command -v node >/dev/null 2>&1 || missing+=("node")
command -v cargo >/dev/null 2>&1 || missing+=("cargo")
[[ -d "$HERE/node_modules/aws-local-stepfunctions" ]] || missing+=("tests/e2e/node_modules (npm ci in tests/e2e)")
[[ -x "$ROOT/infra/node_modules/.bin/cdk" ]] || missing+=("infra/node_modules (npm ci in infra)")
if ((${#missing[@]})); then
    printf 'e2e: MISSING: %s\n' "${missing[@]}" >&2
    exit 1
fi
"$VENV/bin/python" -c 'import boto3, duckdb' 2>/dev/null || {
    echo "e2e: MISSING: boto3/duckdb in $VENV (scripts/requirements-test.txt)" >&2
    exit 1
}

# cargo lambda watch finds `cargo` on PATH and cargo-lambda's zig in the venv.
export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" "$HERE/e2e.py" "$@"
