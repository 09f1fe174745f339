//! The compact Lambda's entry point: set up once, then serve invocations (see `lib.rs`).

use std::sync::Arc;

use dmarc_tsv_compact::{Compact, handle, support};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

/// mimalloc rather than the system allocator: parsing a small report mail makes a few hundred
/// short-lived allocations, and glibc's malloc and free were about a tenth of the parse time
/// (measured in doc/benchmarks.md). The same choice in every dmarc-tsv binary and benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    support::init_tracing();
    let state = Arc::new(Compact::from_env().await);
    if let Err(failure) = state.as_ref() {
        tracing::error!("setup failed, every invocation will report it: {failure}");
    }
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        handle(Arc::clone(&state), event)
    }))
    .await
}
